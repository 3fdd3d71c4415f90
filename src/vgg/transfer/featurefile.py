"""The descriptors' files (Appendix B): :class:`Features`, one descriptor per image with
its targets and the settings that made it, saved as one ``.npz``; and :class:`ShardStore`,
the ``OUT.parts/`` shards an extraction writes as it goes so that a rerun continues it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import atomic_write
from ..errors import ConfigError, DataError
from ..npz import Array, json_meta, read_npz

log = logging.getLogger(__name__)

FORMAT = "vgg-features"


@dataclass
class Features:
    """One descriptor per image (``X`` (N, D) float32, rows L2-normalised), with its id,
    targets (N, K) multi-hot, ``ignore`` (N, K) (VOC "difficult"-only: neither positive
    nor negative) and the settings that made it (``meta``). Images that could not be read
    are in ``skipped`` {id: reason} and have no row."""

    X: np.ndarray
    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    ignore: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.X.shape[0] != n or self.targets.shape != (n, len(self.classes)):
            raise DataError(f"features do not fit together: {self.X.shape[0]} rows, {n} ids, "
                            f"targets {self.targets.shape} for {len(self.classes)} classes")
        if self.ignore is not None and self.ignore.shape != self.targets.shape:
            raise DataError("the ignore mask does not match the targets")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    @property
    def multi_label(self) -> bool:
        """Whether an image may hold several classes (VOC): scored by average precision."""
        return bool(self.meta.get("multi_label")) or bool((self.targets.sum(1) > 1).any())

    @property
    def labels(self) -> np.ndarray:
        """(N,) the single class of each image (single-label sets; -1 for none)."""
        has = self.targets.sum(1) > 0
        return np.where(has, self.targets.argmax(1), -1).astype(np.int64)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Features:
        r = np.asarray(rows, dtype=np.int64)
        return dataclasses.replace(
            self, X=self.X[r], ids=[self.ids[i] for i in r], targets=self.targets[r],
            ignore=None if self.ignore is None else self.ignore[r], skipped={})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one ``.npz`` atomically (nothing is left half-written)."""
        meta = dict(self.meta, format=FORMAT, classes=self.classes, skipped=self.skipped)

        def write(f: Any) -> None:
            arrays = {"X": self.X, "ids": np.array(self.ids, dtype=str),
                      "targets": self.targets.astype(np.uint8),
                      "meta": np.array(json.dumps(meta))}
            if self.ignore is not None:
                arrays["ignore"] = self.ignore.astype(bool)
            np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Features:
        """Read features saved by :meth:`save` (:func:`vgg.npz.read_npz`); a file of
        another kind, or broken, is one error naming it."""
        z = read_npz(path, FEATURES_NPZ, "features")
        meta = json_meta(z, path)
        if meta.get("format") != FORMAT:
            raise DataError(f"{path} is not a vgg features file (its meta has no "
                            f"format {FORMAT!r})")
        classes, skipped = meta.pop("classes", None), meta.pop("skipped", {})
        if not isinstance(classes, list) or len(classes) != z["targets"].shape[1]:
            raise DataError(f"features file {path}: its meta names "
                            f"{len(classes) if isinstance(classes, list) else 'no'} classes "
                            f"for {z['targets'].shape[1]} target columns")
        if not isinstance(skipped, dict):
            raise DataError(f"features file {path}: malformed meta (skipped)")
        out = cls(X=z["X"].astype(np.float32), ids=[str(i) for i in z["ids"]],
                  targets=z["targets"].astype(np.uint8), classes=[str(c) for c in classes],
                  ignore=z["ignore"].astype(bool) if "ignore" in z else None,
                  skipped=dict(skipped), meta=meta)
        if not np.isfinite(out.X).all():
            raise DataError(f"{path} holds non-finite descriptors")
        return out


# the arrays of a features file (vgg.npz: N images or boxes, D dimensions, K classes)
FEATURES_NPZ = {"X": Array("f", ("N", "D")), "ids": Array("U", ("N",)),
                "targets": Array("iub", ("N", "K")), "meta": Array("U", ()),
                "ignore": Array("b", ("N", "K"), required=False)}


# ---------------------------------------------------------------------------- shards

SHARD_NPZ = {"q": Array("iu", ()), "rows": Array("iu", ("R",))}  # and net<j>: (R, D)


class ShardStore:
    """``OUT.parts/``: descriptors written as they are computed, one ``.npz`` per chunk
    of images and Q, with a manifest naming the settings. A rerun with the same settings
    reads them back and computes only the rest; with other settings it is refused (the
    folder would mix two extractions)."""

    def __init__(self, folder: Path, key: dict[str, Any]) -> None:
        self.folder = folder
        self.key = key
        self.digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.count = 0

    def open(self, restart: bool = False) -> list[dict[str, np.ndarray]]:
        """The shards already written (after checking they are ours)."""
        from ..checkpoint import remove_orphan_temporaries

        manifest = self.folder / "manifest.json"
        if restart:  # the shards and manifest go; the folder (and its run lock) stays
            for p in [*self.folder.glob("shard-*.npz"), manifest]:
                p.unlink(missing_ok=True)
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("digest") != self.digest:
                raise ConfigError(
                    f"{self.folder} holds an interrupted extraction with other settings "
                    f"({key_differences(old.get('key', {}), self.key)}); rerun with the same "
                    f"settings to continue it, or pass --restart to discard it")
        elif self.folder.exists() and any(self.folder.glob("*.npz")):
            raise ConfigError(f"{self.folder} holds shards without a manifest; remove it or "
                              f"pass --restart")
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_orphan_temporaries(self.folder)
        atomic_write(manifest, lambda f: f.write(json.dumps(
            {"digest": self.digest, "key": self.key}, indent=1).encode()))
        shards = []
        for p in sorted(self.folder.glob("shard-*.npz")):
            try:
                shards.append(read_npz(p, SHARD_NPZ, "shard"))
            except DataError as e:  # damaged after it was written: recomputed
                log.warning("ignoring unreadable shard (%s)", e)
            self.count += 1
        return shards

    def write(self, q: int, rows: np.ndarray, per_net: list[np.ndarray]) -> None:
        arrays = {"q": np.array(q), "rows": rows.astype(np.int64)}
        arrays.update({f"net{j}": a for j, a in enumerate(per_net)})
        name = self.folder / f"shard-{self.count:06d}.npz"
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(name, lambda f: f.write(buf.getvalue()))
        self.count += 1


def key_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The keys of two settings dicts that differ, for a message."""
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "different " + ", ".join(diff) if diff else "unreadable manifest"
