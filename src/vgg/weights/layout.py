"""Our state-dict layout (torchvision's: ``features.N.*``, ``classifier.{0,3,6}.*``), the
common ground of every format read: which Table 1 config a state dict in this layout is
(:func:`infer_config`), what keeps one from loading into a net (:func:`shape_problems`),
and a state dict built from conv and FC arrays in forward order (:func:`assemble`, the
last step of the Caffe and Keras readers)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ..archs import ARCHS, resolve_arch
from ..errors import CheckpointError, ConfigError
from ..model import VGG, NetShape, VGGConfig, last_channels, layer_specs

StateDict = Mapping[str, torch.Tensor]
# The 2-D placeholder FC layers of a features-only net (a Keras ``_notop`` file, a Caffe net
# without fc6-fc8): one unit each, on a 7 x 7 pool5 (crop 224). Never used to classify.
FEATURES_ONLY_CROP = 224


def shape_problems(sd: StateDict, config: VGGConfig) -> list[str]:
    """Why ``sd`` does not load into net ``config``: missing and unexpected keys, then
    tensors of the wrong shape (empty when it fits)."""
    with torch.device("meta"):
        model = VGG(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"missing {k}" for k in expected if k not in sd]
    problems += [f"unexpected {k}" for k in sd if k not in expected]
    problems += [f"{k}: shape {tuple(sd[k].shape)}, expected {expected[k]}"
                 for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    return problems


def infer_config(state_dict: StateDict, arch: str | None = None,
                 dropout: float = 0.5) -> VGGConfig:
    """The :class:`VGGConfig` whose torchvision-layout state dict ``state_dict`` is.

    Reads width (first conv / 64), FC width, number of classes and crop (from FC1's input
    size) off the shapes, batch norm off ``running_mean`` keys, and tries every config of
    Table 1 (or only ``arch``). Raises ``CheckpointError`` naming the mismatched keys of
    the closest config when none fits.
    """
    sd = state_dict
    try:
        first = sd["features.0.weight"]
        fc1, fc3 = sd["classifier.0.weight"], sd["classifier.6.weight"]
    except KeyError as e:
        raise CheckpointError(f"not a VGG state dict in torchvision layout: no key {e.args[0]} "
                              f"(keys: {sorted(sd)[:6]}...)") from None
    if first.dim() != 4 or fc1.dim() != 2 or fc3.dim() != 2:
        raise CheckpointError("not a VGG state dict: features.0.weight must be a 4-D conv "
                              "weight and classifier.{0,6}.weight 2-D linear weights")
    batch_norm = any(k.endswith("running_mean") for k in sd)
    if arch is not None:
        try:
            name, bn = resolve_arch(arch)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        candidates, batch_norm = [name], bn or batch_norm
    else:
        candidates = list(ARCHS)
    # Channel counts are round(c * width): the widest conv (512 w) pins width best.
    widest = max(v.shape[0] for k, v in sd.items()
                 if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4)
    widths = list(dict.fromkeys([widest / 512, first.shape[0] / 64]))
    fc_width, num_classes = fc1.shape[0], fc3.shape[0]
    best: tuple[int, str, list[str]] | None = None
    for name, width in ((n, w) for n in candidates for w in widths):
        base = VGGConfig(arch=name, batch_norm=batch_norm, width=width)
        k2 = fc1.shape[1] / last_channels(base)
        k = int(round(math.sqrt(k2)))
        if k < 1 or k * k != k2:
            problems = [f"classifier.0.weight: {fc1.shape[1]} inputs is not "
                        f"{last_channels(base)} x k x k"]
            config = None
        else:
            config = VGGConfig(arch=name, batch_norm=batch_norm, num_classes=num_classes,
                               width=width, fc_width=fc_width, crop=32 * k, dropout=dropout)
            problems = shape_problems(sd, config)
        if not problems and config is not None:
            return config
        if best is None or len(problems) < len(best[2]):
            best = (len(problems), name + ("-BN" if batch_norm else ""), problems)
    assert best is not None
    shown = "; ".join(best[2][:6]) + (f" (+{len(best[2]) - 6} more)" if len(best[2]) > 6 else "")
    raise CheckpointError(f"the weights fit no VGG config{'' if arch is None else ' ' + arch}; "
                          f"closest is {best[1]}: {shown}")


def _conv_positions(arch: str) -> list[tuple[int, int]]:
    """(index in ``features``, kernel side) of each conv of ``arch`` without batch norm."""
    return [(i, s.kernel) for i, s in enumerate(layer_specs(NetShape(arch=arch)))
            if s.kind == "conv"]


def _arch_for(kernels: list[int], arch: str | None, lrn: bool, where: str) -> str:
    """The Table 1 config whose convs have these kernel sides, in order (A-LRN over A when
    the file has an LRN layer); ``arch`` restricts the choice."""
    if arch is not None:
        try:
            name, bn = resolve_arch(arch)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        if bn:
            raise ConfigError(f"{where} has no batch-norm layers (the Caffe and Keras VGG "
                              f"nets have none): drop --bn / _bn")
        candidates = [name]
    else:
        candidates = list(ARCHS)
    fits = [a for a in candidates if [k for _, k in _conv_positions(a)] == kernels]
    if "A" in fits and "A-LRN" in fits and arch is None:
        fits.remove("A" if lrn else "A-LRN")
    if not fits:
        known = ", ".join(f"{a}: {len(_conv_positions(a))}" for a in candidates)
        raise CheckpointError(f"{where}: its {len(kernels)} conv layers (kernels "
                              f"{'/'.join(map(str, kernels))}) fit no VGG config "
                              f"({known} convs)")
    return fits[0]


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 tensor owning its memory: copies only arrays that are views of a read-only
    buffer (a Caffe file's bytes), unaligned, of another dtype or not contiguous."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not (a.flags.writeable and a.flags.aligned):
        a = a.copy()
    return torch.from_numpy(a)


def assemble(convs: list[tuple[str, np.ndarray, np.ndarray]],
              fcs: list[tuple[str, np.ndarray, np.ndarray]], arch: str | None, lrn: bool,
              where: str) -> tuple[dict[str, torch.Tensor], VGGConfig, bool]:
    """A torchvision-layout state dict from conv weights (O, I, k, k) and FC weights
    (out, in) in torchvision's (C, H, W) input order, in forward order; its config; and
    whether the file had no FC layers (``features_only``: placeholder FC layers)."""
    for name, w, b in convs:
        if w.ndim != 4 or w.shape[2] != w.shape[3] or b.shape != (w.shape[0],):
            raise CheckpointError(f"{where}: conv layer {name!r} has weights {w.shape} and "
                                  f"bias {b.shape}, not (out, in, k, k) and (out,)")
    name = _arch_for([w.shape[2] for _, w, _ in convs], arch, lrn, where)
    sd: dict[str, torch.Tensor] = {}
    for (idx, _), (_, w, b) in zip(_conv_positions(name), convs):
        sd[f"features.{idx}.weight"], sd[f"features.{idx}.bias"] = _tensor(w), _tensor(b)
    features_only = not fcs
    if features_only:
        c5 = convs[-1][1].shape[0]
        k = FEATURES_ONLY_CROP // 32
        fcs = [("fc6", np.zeros((1, c5 * k * k)), np.zeros(1)),
               ("fc7", np.zeros((1, 1)), np.zeros(1)), ("fc8", np.zeros((1, 1)), np.zeros(1))]
    if len(fcs) != 3:
        raise CheckpointError(f"{where}: {len(fcs)} fully-connected layers "
                              f"({', '.join(n for n, _, _ in fcs)}); a VGG net has three "
                              f"(fc6, fc7, fc8) or none (convolutional layers only)")
    for idx, (fc_name, w, b) in zip((0, 3, 6), fcs):
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise CheckpointError(f"{where}: FC layer {fc_name!r} has weights {w.shape} and "
                                  f"bias {b.shape}, not (out, in) and (out,)")
        sd[f"classifier.{idx}.weight"], sd[f"classifier.{idx}.bias"] = _tensor(w), _tensor(b)
    try:
        config = infer_config(sd, name)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return sd, config, features_only
