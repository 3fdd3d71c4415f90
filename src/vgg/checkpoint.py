"""The checkpoint format: one file with the architecture config, class names,
preprocessing, free-form metadata (training scale, dataset statistics...), the weights,
and optionally the training state for resuming.

Files are written atomically (temporary file in the same folder, fsync, rename), so an
interrupted save never corrupts an existing checkpoint. Loading uses
``torch.load(weights_only=True)``: a file that would execute code when unpickled is
refused, never run. This module reads vgg's own format only: weights in other formats are
read by :mod:`vgg.weights`, whose ``open_weights`` (``vgg.load_checkpoint``) opens any file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ConfigError, VggError
from .model import VGG, VGGConfig
from .preprocess import Preprocess

log = logging.getLogger(__name__)

FORMAT = "vgg-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint file holds. ``meta`` carries JSON-like facts (``train_scale``,
    ``stats``, ``epoch``, ...); ``train_state`` the optimizer/schedule/RNG state of a run."""

    config: VGGConfig
    state_dict: dict[str, torch.Tensor]
    classes: list[str] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess.paper)
    class_names: list[str] | None = None  # human-readable, aligned with classes
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] | None = None
    path: Path | None = None

    def build_model(self, strict: bool = True) -> VGG:
        """The net with the stored weights (train mode, like a freshly built one).

        With ``strict`` the net is created on the meta device and takes the stored
        tensors as they are (no random init of 138M parameters, no second copy); the conv
        weights are then put in the model's memory format (channels-last).
        """
        with torch.device("meta") if strict else contextlib.nullcontext():
            model = VGG(self.config, classes=self.classes, preprocess=self.preprocess,
                        class_names=self.class_names)
        try:
            model.load_state_dict(self.state_dict, strict=strict, assign=strict)
        except RuntimeError as e:
            raise CheckpointError(f"weights in {self.path or 'checkpoint'} do not fit "
                                  f"{self.config.name}: {state_dict_error(e)}") from None
        return model.to(memory_format=model.memory_format)


def state_dict_error(e: RuntimeError, limit: int = 3) -> str:
    """The useful lines of ``load_state_dict``'s error (its first line names no key)."""
    lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
    if not lines:
        return str(e)
    more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync, then rename it
    over ``path``. On any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Fail now, before any long work, when ``path`` cannot be written later: its folder
    cannot be created or written, or ``path`` is a folder. Nothing is left behind
    (a probe file is created and removed)."""
    path = Path(path)
    if path.is_dir():
        raise VggError(f"{what} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe",
                                     dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise VggError(f"cannot write {what} {path}: {e.strerror or e}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise VggError(f"cannot write {what} {path}: permission denied")
    return path


def remove_orphan_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` leaves when the process is
    killed mid-write (``.NAME.<random>.tmp``); returns what was removed. Only call this while
    holding the folder (no other writer)."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def checkpoint_dict(model: VGG, meta: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain dict stored on disk (tensors, numbers, strings, lists and dicts only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    d: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "classes": list(model.classes) if model.classes is not None else None,
        "class_names": list(model.class_names) if model.class_names is not None else None,
        "preprocess": model.preprocess.to_dict(),
        "meta": dict(meta or {}),
        "state_dict": state,
    }
    if train_state is not None:
        d["train_state"] = train_state
    return d


def save_checkpoint(path: str | os.PathLike[str], model: VGG,
                    meta: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config, classes, preprocessing, weights) and optional metadata and
    training state to ``path`` atomically."""
    d = checkpoint_dict(model, meta, train_state)
    try:
        return atomic_write(path, lambda f: torch.save(d, f))
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None


def _all_finite(v: torch.Tensor, chunk: int = 1 << 22) -> bool:
    # In chunks: torch.isfinite makes float temporaries as large as its input, 400 MB
    # more peak memory for VGG-16's FC6 in one piece.
    flat = v.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + chunk]).all())
               for i in range(0, flat.numel(), chunk))


def nonfinite_keys(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not _all_finite(v)]


def check_finite(state_dict: dict[str, torch.Tensor], where: str) -> None:
    """``CheckpointError`` naming ``where`` and the first bad tensors when any weight is NaN
    or infinite (such a net scores nothing meaningful: refuse it, never evaluate it)."""
    bad = nonfinite_keys(state_dict)
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(f"{where} holds non-finite weights (NaN or inf) in "
                              f"{', '.join(bad[:3])}{more}: the training that wrote it "
                              f"diverged; use an earlier checkpoint")


def _unreadable(path: Path) -> str:
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    return ("corrupt or truncated, or not a format vgg reads (a vgg checkpoint, torchvision "
            "or timm .pth/.safetensors, Caffe .caffemodel, Keras .h5)")


def unreadable_error(path: Path) -> CheckpointError:
    """The error for a file that is no torch file at all (empty, garbage, another format)."""
    return CheckpointError(f"cannot read checkpoint {path}: the file is {_unreadable(path)}")


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a ``Path``; ``CheckpointError`` when it is a folder or missing."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file (a run folder "
                              f"holds best.pt and last.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_torch_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """What ``torch.load(weights_only=True)`` reads from ``path``; a file that would run code
    when unpickled is refused, and any other failure is one ``CheckpointError`` naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "weights_only" in first or "global" in first.lower():
            raise CheckpointError(f"refusing to load {path}: it holds objects other than "
                                  f"weights (possible code)") from None
        log.debug("unpickling %s failed: %s", path, first)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or "
                              f"truncated") from None
    except Exception as e:  # noqa: BLE001 - random bytes raise anything from the unpickler
        log.debug("reading %s failed: %s: %s", path, type(e).__name__, e)
        raise unreadable_error(path) from None


def is_checkpoint_dict(d: Any) -> bool:
    """Whether what ``torch.load`` read is a vgg checkpoint (not foreign weights)."""
    return isinstance(d, dict) and d.get("format") == FORMAT


def checkpoint_from_dict(d: Any, path: Path, allow_nonfinite: bool = False) -> Checkpoint:
    """The :class:`Checkpoint` of the dict :func:`save_checkpoint` wrote, read from ``path``;
    ``CheckpointError`` naming the file when it is not one, is newer or malformed, or
    (unless ``allow_nonfinite``) holds NaN or infinite weights."""
    if not is_checkpoint_dict(d):
        raise CheckpointError(f"{path} is not a vgg checkpoint (`vgg convert` converts "
                              f"torchvision/timm/Caffe/Keras weights)")
    if not isinstance(d.get("version", 0), int) or d.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer vgg (format "
                              f"{d.get('version')} > {VERSION})")
    try:
        config = VGGConfig.from_dict(d["config"])
        preprocess = Preprocess.from_dict(d["preprocess"])
        classes = d.get("classes")
        if classes is not None and (not isinstance(classes, list)
                                    or not all(isinstance(c, str) for c in classes)):
            raise ValueError("classes must be a list of names")
        class_names = d.get("class_names")
        if class_names is not None and (
                not isinstance(class_names, list) or classes is None
                or len(class_names) != len(classes)
                or not all(isinstance(c, str) for c in class_names)):
            raise ValueError("class_names must be a list of names, one per class")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("meta must be a mapping")
        state_dict = d["state_dict"]
        if not isinstance(state_dict, dict) or not all(
                isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ValueError("state_dict must map names to tensors")
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        what = f"no {e.args[0]!r} entry" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{path}: malformed checkpoint header ({what})") from None
    if not allow_nonfinite:
        check_finite(state_dict, str(path))
    return Checkpoint(config=config, state_dict=state_dict, classes=classes,
                      preprocess=preprocess, class_names=class_names, meta=meta,
                      train_state=d.get("train_state"), path=path)


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu",
                    allow_nonfinite: bool = False) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, safely: vgg's own format only
    (``vgg.load_checkpoint`` / :func:`vgg.weights.open_weights` also open foreign weights).

    Raises ``CheckpointError`` naming the file when it is missing, not a checkpoint,
    corrupt, carries pickled code, or (unless ``allow_nonfinite``) holds NaN or infinite
    weights.
    """
    path = checkpoint_file(path)
    return checkpoint_from_dict(read_torch_file(path, map_location), path, allow_nonfinite)


def load_model(path: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> VGG:
    """The model of a checkpoint, ready to use (``eval()`` mode)."""
    return load_checkpoint(path, map_location).build_model().eval()


def describe(ckpt: Checkpoint) -> str:
    """One line saying what a checkpoint holds: "classification net D (1000 classes)" or
    "localisation net D with a PCR head (200 classes)"."""
    c = ckpt.config
    if ckpt.meta.get("features_only"):
        return f"convolutional layers of net {c.name} (no FC layers)"
    if c.is_classifier:
        return f"classification net {c.name} ({c.num_classes} classes)"
    return f"localisation net {c.name} with a {c.head.upper()} head ({c.num_classes} classes)"


def require_head(ckpt: Checkpoint, classifier: bool, command: str) -> None:
    """``CheckpointError`` when a classification command gets a localisation checkpoint or
    the other way round, saying what the file is and what to run instead."""
    if ckpt.meta.get("features_only"):
        raise CheckpointError(f"{ckpt.path} holds convolutional layers only (no FC layers, "
                              f"e.g. a Keras _notop file), so it cannot classify: use it for "
                              f"features (vgg.PerceptualLoss, model.extract) or to start "
                              f"training (`vgg train --finetune-from`)")
    if ckpt.config.is_classifier == classifier:
        return
    if classifier:
        raise CheckpointError(f"{ckpt.path} is a {describe(ckpt)}: its outputs are boxes; "
                              f"use `vgg localize {command}` (with --classifier CKPT for the "
                              f"classes)")
    raise CheckpointError(f"{ckpt.path} is a {describe(ckpt)}, not a localisation net; use "
                          f"`vgg {command}` for classes, or make a localisation net with "
                          f"`vgg localize train --from {ckpt.path}`")
