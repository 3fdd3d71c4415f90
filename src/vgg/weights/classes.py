"""Class names for converted weights: ImageNet's 1000 classes as the published weights
order them (shipped with vgg), and names read from a user's file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError

ClassesArg = Sequence[str] | str | None


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1000 ILSVRC-2012 classes in the order of the published weights (torchvision,
    timm, the Caffe/Keras ports): (wnids, human-readable names), from the file shipped
    with vgg (nothing is downloaded)."""
    text = (Path(__file__).parent / "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [ln.split("\t") for ln in text.splitlines() if ln and not ln.startswith("#")]
    return [r[0] for r in rows], [r[1] for r in rows]


def resolve_classes(classes: ClassesArg, num_classes: int) -> tuple[list[str] | None,
                                                                    list[str] | None]:
    """``classes`` as (ids, display names): None, a list of names, or "imagenet" (wnids as
    ids, so datasets in ImageNet's folder layout match by name; English names shown)."""
    if classes is None:
        return None, None
    if isinstance(classes, str):
        if classes.lower() != "imagenet":
            raise ConfigError(f"classes={classes!r}: give a list of names or 'imagenet'")
        if num_classes != 1000:
            raise ConfigError(f"classes='imagenet' needs a 1000-class net, these weights have "
                              f"{num_classes} outputs")
        return imagenet_classes()
    return [str(c) for c in classes], None


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file (one name a line; blank lines at the end ignored) or a
    JSON list of strings (``.json``, or a file starting with ``[``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read class names from {path}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path} must hold a JSON list of class names (strings)")
    else:
        names = [ln.strip() for ln in text.rstrip().splitlines()]
    empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
    if not names or empty:
        raise ConfigError(f"{path}: " + (f"empty class name at line/item {empty[0]}" if empty
                                         else "no class names"))
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"{path}: class name {dup!r} appears twice")
    return names
