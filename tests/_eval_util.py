"""Helpers shared by the evaluation tests: tiny nets and tiny generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import vgg

CLASSES = ["cat", "dog", "fox"]


def tiny_net(classes: list[str] | None = None, seed: int = 0, arch: str = "A") -> vgg.VGG:
    import torch

    g = torch.Generator().manual_seed(seed)
    return vgg.build(arch, width=1 / 16, fc_width=32, crop=32, classes=classes or CLASSES,
                     init="kaiming", generator=g).eval()


def save_net(path: Path, classes: list[str] | None = None, seed: int = 0,
             train_scale: list[int] | None = None) -> Path:
    meta = {"train_scale": train_scale} if train_scale is not None else None
    return vgg.save_checkpoint(path, tiny_net(classes, seed), meta=meta)


SIZES = [(40, 40), (48, 40), (40, 56), (40, 40)]


def make_images(root: Path, classes: list[str] | None = None,
                sizes: list[tuple[int, int]] | None = None, seed: int = 0) -> Path:
    """root/<class>/<i>.png: random-noise images of the given (width, height) sizes."""
    rng = np.random.default_rng(seed)
    for c in classes or CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes or SIZES):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root
