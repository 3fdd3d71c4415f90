"""Full-size weight conversion: time, peak memory and agreement, on VGG-16 files of real
size written here from random weights (nothing can be downloaded).

Writes, from one set of random VGG-16 weights (He init, so activations stay O(1)):
- torchvision: ``torch.save(state_dict)``, as ``vgg16-397923af.pth`` is stored;
- Caffe: a V1 ``NetParameter`` encoded byte for byte as Caffe writes the authors'
  ``VGG_ILSVRC_16_layers.caffemodel`` (``layers`` with V1 types, 4-D blobs
  num/channels/height/width, FC weights (1, 1, out, in), packed float data);
- Keras: the same weights in Keras's layout (HWIO kernels, FC1 rows in channels-last
  flatten order, dense kernels (in, out)) with Keras's groups and attributes.

Each file is converted by ``vgg.weights.read_weights`` in a fresh process (wall time and
peak RSS of that process, which includes importing torch). The Caffe and Keras conversions
of the same weights must give the same scores on a 224 x 224 image: this checks FC1's
channels-last -> (C, H, W) permutation at the real 7 x 7 pool5 size.

Run: python benchmarks/bench_convert.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import vgg
from vgg.weights import read_weights

BLOCKS = (2, 2, 3, 3, 3)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _blob(arr: np.ndarray) -> bytes:
    shape = (1,) * (4 - arr.ndim) + arr.shape
    head = b"".join(_int_field(i + 1, int(d)) for i, d in enumerate(shape))
    return head + _field(5, np.ascontiguousarray(arr, dtype="<f4").tobytes())


def write_caffe_v1(path: Path, caffe: dict[str, list[np.ndarray]]) -> None:
    """V1LayerParameter: name 4, type 5 (CONVOLUTION 4, RELU 18, POOLING 17,
    INNER_PRODUCT 14, DROPOUT 6, SOFTMAX 20), blobs 6."""
    with open(path, "wb") as f:
        f.write(_field(1, b"VGG_ILSVRC_16_layers"))

        def layer(name: str, kind: int, blobs: list[np.ndarray] = ()) -> None:  # type: ignore[assignment]
            body = _field(4, name.encode()) + _int_field(5, kind)
            f.write(_varint(2 << 3 | 2))
            parts = [body] + [_field(6, _blob(b)) for b in blobs]
            f.write(_varint(sum(len(p) for p in parts)))
            for p in parts:
                f.write(p)

        for b, n in enumerate(BLOCKS, 1):
            for i in range(1, n + 1):
                layer(f"conv{b}_{i}", 4, caffe[f"conv{b}_{i}"])
                layer(f"relu{b}_{i}", 18)
            layer(f"pool{b}", 17)
        for k in (6, 7):
            layer(f"fc{k}", 14, caffe[f"fc{k}"])
            layer(f"relu{k}", 18)
            layer(f"drop{k}", 6)
        layer("fc8", 14, caffe["fc8"])
        layer("prob", 20)


def write_keras(path: Path, caffe: dict[str, list[np.ndarray]]) -> None:
    import h5py

    names = ["input_1"]
    weights: dict[str, list[np.ndarray]] = {}
    for b, n in enumerate(BLOCKS, 1):
        for i in range(1, n + 1):
            w, bias = caffe[f"conv{b}_{i}"]
            weights[f"block{b}_conv{i}"] = [w.transpose(2, 3, 1, 0), bias]  # OIHW -> HWIO
            names.append(f"block{b}_conv{i}")
        names.append(f"block{b}_pool")
    w6, b6 = caffe["fc6"]  # (out, C*7*7) in C, H, W order -> (7*7*C, out) in H, W, C order
    weights["fc1"] = [w6.reshape(-1, 512, 7, 7).transpose(2, 3, 1, 0).reshape(-1, w6.shape[0]),
                      b6]
    weights["fc2"] = [caffe["fc7"][0].T, caffe["fc7"][1]]
    weights["predictions"] = [caffe["fc8"][0].T, caffe["fc8"][1]]
    names += ["flatten", "fc1", "fc2", "predictions"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        for name in names:
            g = f.create_group(name)
            wn = []
            for arr, kind in zip(weights.get(name, []), ("kernel", "bias")):
                g.create_dataset(f"{name}/{kind}:0", data=np.ascontiguousarray(arr, "<f4"))
                wn.append(f"{name}/{kind}:0".encode())
            g.attrs["weight_names"] = np.array(wn, dtype="S64")


def random_weights(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, list[np.ndarray]]]:
    g = torch.Generator().manual_seed(seed)
    model = vgg.build("D", init="kaiming", generator=g)
    with torch.no_grad():
        for idx in (0, 3, 6):  # He init on the FC layers too, so scores are not ~0
            lin = model.classifier[idx]
            lin.weight.normal_(0, (2 / lin.in_features) ** 0.5, generator=g)
            lin.bias.normal_(0, 0.1, generator=g)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    caffe: dict[str, list[np.ndarray]] = {}
    for name, i in model.layer_names.items():
        if name.startswith("conv"):
            caffe[name] = [sd[f"features.{i}.weight"].numpy(), sd[f"features.{i}.bias"].numpy()]
    for name, i in (("fc6", 0), ("fc7", 3), ("fc8", 6)):
        caffe[name] = [sd[f"classifier.{i}.weight"].numpy(), sd[f"classifier.{i}.bias"].numpy()]
    return sd, caffe


# Peak RSS from VmHWM: getrusage's ru_maxrss survives fork + exec, so it would report
# this (large) parent's memory instead of the child's.
CHILD = """
import json, re, sys, time
t = time.perf_counter()
from vgg.weights import read_weights
ck = read_weights(sys.argv[1])
model = ck.build_model()
dt = time.perf_counter() - t
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"seconds": dt, "peak_rss_mb": hwm / 1024,
                  "net": ck.config.name, "classes": ck.config.num_classes,
                  "preprocess": ck.preprocess.channel_order}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    folder.mkdir(parents=True, exist_ok=True)
    sd, caffe = random_weights()
    paths = {"torchvision": folder / "vgg16-397923af.pth",
             "caffe": folder / "VGG_ILSVRC_16_layers.caffemodel",
             "keras": folder / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"}
    torch.save(sd, paths["torchvision"])
    write_caffe_v1(paths["caffe"], caffe)
    write_keras(paths["keras"], caffe)
    del sd, caffe
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("| format | file | size (MB) | convert + build (s) | peak RSS (MB) | net |")
    print("|---|---|---:|---:|---:|---|")
    for fmt, path in paths.items():
        out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {fmt} | {path.name} | {path.stat().st_size / 1e6:.0f} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} | {r['net']}, {r['classes']} classes, "
              f"{r['preprocess']} |")
    # Same weights, Caffe layout vs Keras layout: the same scores at 224 x 224.
    image = torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(1))
    scores = {}
    for fmt in ("caffe", "keras"):
        model = read_weights(paths[fmt]).build_model().eval()
        with torch.no_grad():
            scores[fmt] = model(model.preprocess(image)).double()
        del model
    diff = (scores["caffe"] - scores["keras"]).abs().max().item()
    size = scores["caffe"].abs().max().item()
    print(f"Caffe vs Keras conversion of the same weights, one 224 x 224 image: max |score "
          f"difference| {diff:.2e} (scores up to {size:.1f}); same top-5: "
          f"{scores['caffe'].topk(5).indices.tolist() == scores['keras'].topk(5).indices.tolist()}")
    if args.keep is None:
        for p in paths.values():
            p.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
