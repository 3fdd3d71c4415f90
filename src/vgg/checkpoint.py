"""The checkpoint format: one file with the architecture config, class names,
preprocessing, free-form metadata (training scale, dataset statistics...), the weights,
and optionally the training state for resuming.

Files are written atomically (temporary file in the same folder, fsync, rename), so an
interrupted save never corrupts an existing checkpoint. Loading uses
``torch.load(weights_only=True)``: a file that would execute code when unpickled is
refused, never run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ConfigError
from .model import VGG, VGGConfig
from .preprocess import Preprocess

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
            model = VGG(self.config, classes=self.classes, preprocess=self.preprocess)
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


def checkpoint_dict(model: VGG, meta: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain dict stored on disk (tensors, numbers, strings, lists and dicts only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    d: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "classes": list(model.classes) if model.classes is not None else None,
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


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, safely.

    Raises ``CheckpointError`` naming the file when it is missing, not a checkpoint,
    corrupt, or carries pickled code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        d = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"refusing to load {path}: it holds objects other than "
                              f"weights (possible code): {first}") from None
    except Exception as e:  # noqa: BLE001 - random bytes raise anything from the unpickler
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch file or "
                              f"corrupt ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vgg checkpoint (use `vgg.weights` to "
                              f"convert torchvision/timm/Caffe weights)")
    if d.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer vgg (format "
                              f"{d.get('version')} > {VERSION})")
    try:
        config = VGGConfig.from_dict(d["config"])
        preprocess = Preprocess.from_dict(d["preprocess"])
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint header ({e})") from None
    return Checkpoint(config=config, state_dict=d["state_dict"], classes=d.get("classes"),
                      preprocess=preprocess, meta=d.get("meta") or {},
                      train_state=d.get("train_state"), path=path)


def load_model(path: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> VGG:
    """The model of a checkpoint, ready to use (``eval()`` mode)."""
    return load_checkpoint(path, map_location).build_model().eval()
