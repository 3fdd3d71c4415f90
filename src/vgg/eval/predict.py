"""Prediction for users: the top-k classes of each image with their probabilities, by dense
evaluation at one test scale (Sect. 3.2) by default. One unreadable image gives an error
entry naming it; the others are still predicted."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import BadImageError, ConfigError
from .dense import dense_posteriors
from .evaluate import EvalNet, _device, as_net, check_scales, default_scales
from .multicrop import center_posteriors

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                  ".ppm", ".pgm")


@dataclass
class Prediction:
    """``top``: [(class name, probability)], highest first; or ``error`` for a bad file."""

    path: str
    top: list[tuple[str, float]] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path,
                "top": [{"class": c, "prob": round(p, 6)} for c, p in self.top or []]}


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders -> their image files (recursively, sorted). Missing paths
    are kept so that they get an error entry."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def predict(model: Any, inputs: Sequence[str | os.PathLike[str]], top: int = 5,
            scale: int | None = None, method: str = "dense", flip: bool = True,
            device: str | torch.device | None = None, progress: bool = True
            ) -> list[Prediction]:
    """Top-``top`` classes of every image (folders are expanded). ``model``: a checkpoint
    path, ``Checkpoint``, ``VGG`` or ``EvalNet``. ``scale`` Q defaults to the single-scale
    rule of Sect. 3.2 (S, or the middle of the training range). ``method``: "dense" or
    "center"."""
    from ..data.transforms import RescaleTransform

    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    if method not in ("dense", "center"):
        raise ConfigError(f"predict supports methods dense and center, not {method!r}")
    net: EvalNet = as_net(model)
    q = (check_scales([scale], net.crop, net.name)[0] if scale is not None
         else default_scales(net.train_scale, net.crop, multi_scale=False)[0])
    dev = _device(device)
    m = net.model.eval().to(dev)
    fcn = m.to_fully_conv().eval()
    classes = m.classes or [str(i) for i in range(m.config.num_classes)]
    k = min(top, len(classes))
    transform = RescaleTransform(q)
    results: list[Prediction] = []
    paths = expand_inputs(inputs)
    for path in tqdm(paths, desc="predict", unit="img", disable=not progress or len(paths) < 20):
        if not path.is_file():
            results.append(Prediction(str(path), error=f"no such file: {path}"))
            continue
        try:
            img = transform(path)["image"]
        except BadImageError as e:
            results.append(Prediction(str(path), error=str(e)))
            continue
        with torch.inference_mode():
            x = m.preprocess(img[None].to(dev))
            p = (dense_posteriors(fcn, x, flip) if method == "dense"
                 else center_posteriors(fcn, x, net.crop))[0].float().cpu()
        probs, idx = p.topk(k)
        results.append(Prediction(str(path), top=[(classes[i], float(v))
                                                  for v, i in zip(probs.tolist(), idx.tolist())]))
    return results
