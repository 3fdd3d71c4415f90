"""Writers of the original weight formats for the tests (a Caffe NetParameter serialised by
the protobuf package from a schema declared here with caffe.proto's field numbers; a Keras
HDF5 file with Keras's group/attribute layout), and numpy forward passes computed from the
raw arrays in each framework's own layout (NCHW for Caffe, NHWC for Keras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
# VGG-16's conv blocks (Keras names block{b}_conv{i}, Caffe conv{b}_{i})
D_BLOCKS = (2, 2, 3, 3, 3)

# --------------------------------------------------------------------------- Caffe

_V1_TYPES = {"CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6, "INNER_PRODUCT": 14, "LRN": 15,
             "POOLING": 17, "RELU": 18, "SOFTMAX": 20}


def caffe_classes():  # noqa: ANN201 - protobuf message classes
    """NetParameter, V1LayerParameter, LayerParameter, BlobProto message classes, built from a
    subset of caffe.proto (same field numbers, types and packing)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="vgg_test_caffe.proto", package="caffe",
                                             syntax="proto2")

    def message(name: str, fields: list[tuple], enums: dict | None = None) -> None:
        m = fdp.message_type.add(name=name)
        for enum_name, values in (enums or {}).items():
            e = m.enum_type.add(name=enum_name)
            for k, v in values.items():
                e.value.add(name=k, number=v)
        for fname, number, ftype, repeated, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True

    message("BlobShape", [("dim", 1, F.TYPE_INT64, True, None, True)])
    message("BlobProto", [("num", 1, F.TYPE_INT32, False, None, False),
                          ("channels", 2, F.TYPE_INT32, False, None, False),
                          ("height", 3, F.TYPE_INT32, False, None, False),
                          ("width", 4, F.TYPE_INT32, False, None, False),
                          ("data", 5, F.TYPE_FLOAT, True, None, True),
                          ("diff", 6, F.TYPE_FLOAT, True, None, True),
                          ("shape", 7, F.TYPE_MESSAGE, False, ".caffe.BlobShape", False),
                          ("double_data", 8, F.TYPE_DOUBLE, True, None, True)])
    message("ConvolutionParameter", [("num_output", 1, F.TYPE_UINT32, False, None, False),
                                     ("pad", 3, F.TYPE_UINT32, True, None, False),
                                     ("kernel_size", 4, F.TYPE_UINT32, True, None, False)])
    message("V1LayerParameter", [("bottom", 2, F.TYPE_STRING, True, None, False),
                                 ("top", 3, F.TYPE_STRING, True, None, False),
                                 ("name", 4, F.TYPE_STRING, False, None, False),
                                 ("type", 5, F.TYPE_ENUM, False,
                                  ".caffe.V1LayerParameter.LayerType", False),
                                 ("blobs", 6, F.TYPE_MESSAGE, True, ".caffe.BlobProto", False),
                                 ("convolution_param", 10, F.TYPE_MESSAGE, False,
                                  ".caffe.ConvolutionParameter", False)],
            enums={"LayerType": {"NONE": 0, **_V1_TYPES}})
    message("LayerParameter", [("name", 1, F.TYPE_STRING, False, None, False),
                               ("type", 2, F.TYPE_STRING, False, None, False),
                               ("bottom", 3, F.TYPE_STRING, True, None, False),
                               ("top", 4, F.TYPE_STRING, True, None, False),
                               ("blobs", 7, F.TYPE_MESSAGE, True, ".caffe.BlobProto", False),
                               ("convolution_param", 106, F.TYPE_MESSAGE, False,
                                ".caffe.ConvolutionParameter", False)])
    message("NetParameter", [("name", 1, F.TYPE_STRING, False, None, False),
                             ("layers", 2, F.TYPE_MESSAGE, True, ".caffe.V1LayerParameter", False),
                             ("input", 3, F.TYPE_STRING, True, None, False),
                             ("input_dim", 4, F.TYPE_INT32, True, None, False),
                             ("layer", 100, F.TYPE_MESSAGE, True, ".caffe.LayerParameter", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return tuple(get(pool.FindMessageTypeByName(f"caffe.{n}"))
                 for n in ("NetParameter", "V1LayerParameter", "LayerParameter", "BlobProto"))


def caffe_layer_specs(blocks: tuple[int, ...] = D_BLOCKS, lrn: bool = False
                      ) -> list[tuple[str, str]]:
    """(name, type) of a VGG net's layers in forward order, Caffe naming."""
    specs: list[tuple[str, str]] = [("data", "DATA")]
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            specs += [(f"conv{b}_{i}", "CONVOLUTION"), (f"relu{b}_{i}", "RELU")]
            if lrn and b == 1 and i == 1:
                specs.append(("norm1", "LRN"))
        specs.append((f"pool{b}", "POOLING"))
    for k in (6, 7):
        specs += [(f"fc{k}", "INNER_PRODUCT"), (f"relu{k}", "RELU"), (f"drop{k}", "DROPOUT")]
    specs += [("fc8", "INNER_PRODUCT"), ("prob", "SOFTMAX")]
    return specs


def write_caffemodel(path: Path, weights: dict[str, list[np.ndarray]], version: int = 1,
                     fc6_4d: tuple[int, int, int] | None = None,
                     blocks: tuple[int, ...] = D_BLOCKS, lrn: bool = False) -> Path:
    """A .caffemodel of a VGG net with ``weights[name] = [W, b]`` in Caffe's shapes (conv W
    (out, in, k, k), FC W (out, in)). ``version`` 1: V1 ``layers`` with every blob 4-D
    (num, channels, height, width), FC weights (1, 1, out, in), biases (1, 1, 1, out), as
    the authors' files; 2: V2 ``layer`` with BlobShape dims (FC6 4-D (out, C, H, W) when
    ``fc6_4d`` = (C, H, W))."""
    Net, V1, V2, _ = caffe_classes()
    net = Net(name="VGG_ILSVRC_16_layers")
    net.input.append("data")
    net.input_dim.extend([10, 3, 224, 224])
    for name, kind in caffe_layer_specs(blocks, lrn):
        if version == 1:
            layer = net.layers.add(name=name, type=V1.LayerType.Value(kind))
        else:
            v2 = {"CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "RELU": "ReLU",
                  "POOLING": "Pooling", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
                  "DATA": "Data", "LRN": "LRN"}[kind]
            layer = net.layer.add(name=name, type=v2)
        layer.bottom.append("data")
        layer.top.append(name)
        if kind == "CONVOLUTION":
            layer.convolution_param.num_output = int(weights[name][0].shape[0])
            layer.convolution_param.pad.append(1)
            layer.convolution_param.kernel_size.append(3)
        for i, arr in enumerate(weights.get(name, [])):
            blob = layer.blobs.add()
            arr = np.asarray(arr, dtype=np.float32)
            if version == 1:
                shape4 = (1,) * (4 - arr.ndim) + arr.shape
                blob.num, blob.channels, blob.height, blob.width = shape4
            else:
                if name == "fc6" and i == 0 and fc6_4d is not None:
                    arr = arr.reshape(arr.shape[0], *fc6_4d)
                blob.shape.dim.extend(arr.shape)
            blob.data.extend(arr.reshape(-1).tolist())
    path.write_bytes(net.SerializeToString())
    return path


# --------------------------------------------------------------------------- Keras

def write_keras_h5(path: Path, weights: dict[str, list[np.ndarray]], names: list[str],
                   old_names: bool = False) -> Path:
    """A Keras weights file: root attr ``layer_names``, one group per layer with attr
    ``weight_names``; datasets ``<layer>/<layer>/kernel:0`` (Keras 2) or
    ``<layer>/<layer>_W_1:0`` (keras-applications 0.1, ``old_names``)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for name in names:
            g = f.create_group(name)
            wnames = []
            for arr, kind in zip(weights.get(name, []), ("kernel", "bias")):
                wname = (f"{name}_{'W' if kind == 'kernel' else 'b'}_1:0" if old_names
                         else f"{name}/{kind}:0")
                g.create_dataset(wname, data=np.asarray(arr, dtype=np.float32))
                wnames.append(wname.encode())
            g.attrs["weight_names"] = np.array(wnames, dtype="S64")
    return path


def keras_vgg16_layers(top: bool = True) -> list[str]:
    names = ["input_1"]
    for b, n in enumerate(D_BLOCKS, 1):
        names += [f"block{b}_conv{i}" for i in range(1, n + 1)] + [f"block{b}_pool"]
    if top:
        names += ["flatten", "fc1", "fc2", "predictions"]
    return names


def random_keras_vgg16(rng: np.random.Generator, widths=(4, 8, 16, 32, 32), fc: int = 16,
                       classes: int = 10, pool5: int = 2, top: bool = True
                       ) -> dict[str, list[np.ndarray]]:
    """Random weights in Keras's layout: conv kernels (3, 3, in, out), dense (in, out)."""
    w: dict[str, list[np.ndarray]] = {}
    cin = 3
    for b, (n, c) in enumerate(zip(D_BLOCKS, widths), 1):
        for i in range(1, n + 1):
            w[f"block{b}_conv{i}"] = [rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, c)),
                                      rng.normal(0, 0.1, c)]
            cin = c
    if top:
        fin = pool5 * pool5 * cin
        for name, (i, o) in (("fc1", (fin, fc)), ("fc2", (fc, fc)), ("predictions", (fc, classes))):
            w[name] = [rng.normal(0, np.sqrt(2 / i), (i, o)), rng.normal(0, 0.1, o)]
    return w


# ---------------------------------------------------------------- reference forward passes

def _pool_chw(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def caffe_forward(image_rgb: np.ndarray, weights: dict[str, list[np.ndarray]],
                  blocks: tuple[int, ...] = D_BLOCKS) -> np.ndarray:
    """Caffe's arithmetic from its own arrays: (3, H, W) RGB 0..255 -> BGR minus the mean,
    convs on (C, H, W) with (out, in, k, k) weights, pool5 flattened C, H, W into fc6's
    (out, in) weights. Returns the fc8 scores (float64)."""
    x = image_rgb[::-1].astype(np.float64) - CAFFE_MEAN_BGR[:, None, None]
    for b, n in enumerate(blocks, 1):
        for i in range(1, n + 1):
            wt, bias = (np.asarray(a, np.float64) for a in weights[f"conv{b}_{i}"])
            k = wt.shape[-1]
            xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
            patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
            x = np.maximum(np.einsum("chwij,ocij->ohw", patches, wt) + bias[:, None, None], 0)
        x = _pool_chw(x)
    v = x.reshape(-1)  # C, H, W order
    for name in ("fc6", "fc7", "fc8"):
        wt, bias = (np.asarray(a, np.float64) for a in weights[name])
        v = wt.reshape(wt.shape[0], -1) @ v + bias
        if name != "fc8":
            v = np.maximum(v, 0)
    return v


def keras_forward(image_rgb: np.ndarray, weights: dict[str, list[np.ndarray]],
                  top: bool = True) -> np.ndarray:
    """Keras's arithmetic from its own arrays: (H, W, 3) RGB 0..255 -> BGR minus the mean
    (keras.applications.vgg16.preprocess_input, mode "caffe"), convs on (H, W, C) with
    (k, k, in, out) kernels, Flatten of the channels-last pool5 map (H, W, C order), dense
    layers x @ kernel + bias. Returns the predictions' pre-soft-max scores (or the pool5
    map (H, W, C) when not ``top``)."""
    x = image_rgb[..., ::-1].astype(np.float64) - CAFFE_MEAN_BGR
    for b, n in enumerate(D_BLOCKS, 1):
        for i in range(1, n + 1):
            kern, bias = (np.asarray(a, np.float64) for a in weights[f"block{b}_conv{i}"])
            k = kern.shape[0]
            xp = np.pad(x, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
            patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))
            x = np.maximum(np.einsum("hwcij,ijco->hwo", patches, kern) + bias, 0)
        h, w, c = x.shape
        x = x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))
    if not top:
        return x
    v = x.reshape(-1)  # Keras Flatten: H, W, C order
    for name in ("fc1", "fc2", "predictions"):
        kern, bias = (np.asarray(a, np.float64) for a in weights[name])
        v = v @ kern + bias
        if name != "predictions":
            v = np.maximum(v, 0)
    return v
