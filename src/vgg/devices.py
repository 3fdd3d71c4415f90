"""The one place that turns a user's device name into a ``torch.device``, with errors that
say what is missing instead of a CUDA traceback."""

from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_HELP = "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


def pick_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``/None: CUDA (device ``local_rank`` under torchrun), else MPS, else CPU.
    ``"cuda"`` means ``cuda:local_rank``; ``"cuda:N"`` is checked against the devices
    present. Raises ``ConfigError`` for unknown names and absent devices."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available on this machine "
                              f"(use --device cpu or auto)")
        index = local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: MPS is not available on this machine")
        return dev
    if dev.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; use {DEVICE_HELP}")
    return dev
