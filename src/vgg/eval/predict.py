"""Prediction for users: the top-k classes of each image with their probabilities, by dense
evaluation at one test scale (Sect. 3.2) by default. One unreadable image gives an error
entry naming it; the others are still predicted."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..devices import pick_device
from ..errors import BadImageError, ConfigError
from ..model import NET_STRIDE
from ..precision import resolve_precision
from ..progress import Progress
from .dense import dense_posteriors
from .evaluate import EvalNet, as_net, dense_strides
from .multicrop import center_posteriors
from .scales import check_scales, default_scales

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """``top``: [(class name, probability)], highest first; or ``error`` for a bad file.
    ``ids``: the class ids of ``top`` (folder names / wnids) when they differ from the
    names shown."""

    path: str
    top: list[tuple[str, float]] | None = None
    error: str | None = None
    ids: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = []
        for i, (c, p) in enumerate(self.top or []):
            entry: dict[str, Any] = {"class": c, "prob": float(p)}  # full precision
            if self.ids is not None:
                entry["id"] = self.ids[i]
            top.append(entry)
        return {"path": self.path, "top": top}


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path],
                                                                     list[tuple[Path, str]]]:
    """Files as given; folders -> their image files (recursively, sorted, by the data
    layer's rules: known extensions, or image content for files without one). Returns
    (images, [(path, why skipped)]): missing paths and files that are not images."""
    from ..data.folders import list_images

    return list_images([Path(p) for p in inputs])


def quiet_skips(skipped: list[tuple[Path, str]], inputs: Sequence[str | os.PathLike[str]]
                ) -> list[tuple[Path, str]]:
    """The skipped files that are errors: everything named on the command line, and
    files in folders that look like images but are not. Other files found in a folder
    (annotations, notes: no image extension, no image signature) are only counted in one
    log line."""
    named = {Path(p) for p in inputs}
    errors, others = [], []
    for p, why in skipped:
        quiet = p not in named and why.startswith("not an image")
        (others if quiet else errors).append((p, why))
    if others:
        log.info("skipped %d file(s) that are not images (e.g. %s)", len(others), others[0][0])
    return errors


def predict(model: Any, inputs: Sequence[str | os.PathLike[str]], top: int = 5,
            scale: int | None = None, method: str = "dense", flip: bool = True,
            device: str | torch.device | None = None, progress: bool = True,
            precision: str = "fp32", dense_stride: int | str | None = None
            ) -> list[Prediction]:
    """Top-``top`` classes of every image (folders are expanded; what cannot be read gets
    a ``Prediction`` with ``error``). ``model``: a checkpoint path, ``Checkpoint``, ``VGG``
    or ``EvalNet``. ``scale`` Q defaults to the single-scale rule of Sect. 3.2 (S, or the
    middle of the training range). ``method``: "dense" or "center". ``precision``: the
    network's: "fp32" (default), "bf16", "fp16" or "auto" (bf16 where the hardware runs it
    natively; ``vgg.precision``; `vgg predict` defaults to auto); the soft-max and
    averaging stay fp32. ``dense_stride``: the output stride of dense application (a
    divisor of 32; None or "auto": the default for the net's crop, SPEC 6b), as in
    :func:`vgg.eval.evaluate`."""
    from ..data.transforms import RescaleTransform

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ConfigError(f"--top must be an integer >= 1, got {top!r}")
    if method not in ("dense", "center"):
        raise ConfigError(f"predict supports methods dense and center, not {method!r}")
    net: EvalNet = as_net(model)
    stride = dense_strides([net], method, dense_stride)[0]
    q = (check_scales([scale], net.crop, net.name)[0] if scale is not None
         else default_scales(net.train_scale, net.crop, multi_scale=False)[0])
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    m = prec.net(net.model.eval().to(dev))
    fcn = m.to_fully_conv(stride if method == "dense" else NET_STRIDE)
    log.info("%s at Q = %d%s", method, q, f", output stride {stride}" if method == "dense"
             else "")
    ids = m.classes or [str(i) for i in range(m.config.num_classes)]
    names = m.display_names()
    k = min(top, len(ids))
    transform = RescaleTransform(q)
    paths, skipped = expand_inputs(inputs)
    results = [Prediction(str(p), error=f"{p}: {why}")
               for p, why in quiet_skips(skipped, inputs)]
    dtype = next(m.parameters()).dtype
    with Progress(len(paths), "predict", "img", enabled=progress and len(paths) >= 20) as bar:
        for path in paths:
            bar.update(1)
            try:
                img = transform(path)["image"]
            except BadImageError as e:
                results.append(Prediction(str(path), error=str(e)))
                continue
            with torch.inference_mode(), prec.autocast():
                x = m.preprocess(img[None].to(dev), dtype=dtype)
                p = (dense_posteriors(fcn, x, flip) if method == "dense"
                     else center_posteriors(fcn, x, net.crop))[0].float().cpu()
            probs, idx = p.topk(k)
            order = idx.tolist()
            results.append(Prediction(
                str(path), top=[(names[i], float(v)) for v, i in zip(probs.tolist(), order)],
                ids=[ids[i] for i in order] if names != ids else None))
    return results
