"""Inference precision: fp32, bf16 or fp16 networks, with everything after the network
(soft-max, score-map and mirror averaging, fusion, metrics, box decoding) in fp32.

How each device runs a lower precision (measured on the project's 2-core AVX512-BF16 CPU,
docs/benchmarks.md):

- CPU (and MPS): the network runs on a copy of its weights cast to bf16/fp16, activations
  in that dtype, channels-last. On a CPU with native bf16 (AVX512-BF16 or AMX) this is
  about 2.1x fp32; autocast over fp32 weights was ~10% slower (it casts the weights at
  every call). The copy is made once per model and reused while the weights do not
  change (:func:`cast_copy`).
- CUDA: ``torch.autocast`` over the fp32 weights (channels-last): no second copy of the
  weights on the GPU.

``auto`` picks bf16 where the hardware runs it natively (a CPU with AVX512-BF16 or AMX,
an ARM CPU with the bf16 extension, a CUDA GPU of compute capability 8.0 or newer) and
fp32 elsewhere. An explicit ``bf16`` without native support still runs (emulated, slower
than fp32) with one warning per process; fp16 needs CUDA, MPS or a CPU with AMX-FP16.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_HELP = ("network precision: fp32, bf16, fp16 (CUDA/MPS) or auto (bf16 where the "
                  "hardware runs it natively: AVX512-BF16/AMX CPUs, CUDA GPUs of compute "
                  "capability >= 8.0; fp32 elsewhere). Soft-max, averaging and metrics stay "
                  "fp32")

_warned: set[str] = set()


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 dot products in hardware: x86 AVX512-BF16 or AMX
    (what oneDNN uses), or the ARMv8.6 bf16 extension. AVX-512 alone is not enough: there
    oneDNN emulates bf16 and it runs slower than fp32."""
    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None),
              getattr(torch.cpu, "_is_amx_tile_supported", None)]
    for check in checks:
        if check is not None:
            with contextlib.suppress(Exception):
                if check():
                    return True
    flags = _cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags) or (
        "bf16" in flags and "asimd" in flags)  # aarch64 "Features" line


def cpu_native_fp16() -> bool:
    """True on CPUs with AMX-FP16 (oneDNN's native fp16 path); fp16 elsewhere on a CPU is
    emulated and refused."""
    check = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    with contextlib.suppress(Exception):
        if check is not None and check():
            return True
    return "amx_fp16" in _cpu_flags()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 networks natively (faster than fp32)."""
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no including_emulation
            return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_native_bf16()
    return False  # MPS: runs bf16 on recent macOS, but not measured faster here


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


@dataclass(frozen=True)
class Precision:
    """A resolved inference precision on one device: ``name`` fp32/bf16/fp16, ``mode``
    "fp32", "cast" (a low-precision copy of the weights) or "autocast" (CUDA)."""

    name: str
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def mode(self) -> str:
        if self.name == "fp32":
            return "fp32"
        return "autocast" if self.device.type == "cuda" else "cast"

    def net(self, model: nn.Module) -> nn.Module:
        """The module to run: ``model`` itself (fp32, CUDA autocast) or its cached copy
        cast to the precision's dtype (CPU, MPS). ``model`` must already be on the
        device and in eval mode."""
        if self.mode != "cast":
            return model
        return cast_copy(model, self.dtype)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context the network's forward runs in: autocast on CUDA, nothing else."""
        if self.mode == "autocast":
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def running(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with prec.running(model) as net:`` the module to call under inference mode
        and the right autocast."""
        net = self.net(model)
        with torch.inference_mode(), self.autocast():
            yield net


def resolve_precision(precision: str | Precision | None,
                      device: torch.device | str = "cpu") -> Precision:
    """``"fp32" | "bf16" | "fp16" | "auto"`` (None = fp32) on ``device`` -> ``Precision``.

    ``auto``: bf16 where :func:`native_bf16`, else fp32 (said once in the log at INFO).
    ``bf16`` without native support warns once (it runs, slower than fp32). ``fp16`` on a
    CPU without AMX-FP16 is a ``ConfigError`` (oneDNN would emulate it, far slower)."""
    if isinstance(precision, Precision):
        return precision
    dev = torch.device(device)
    name = "fp32" if precision is None else precision
    if not isinstance(name, str) or name.lower() not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                          f"got {precision!r}")
    name = name.lower()
    if name == "auto":
        name = "bf16" if native_bf16(dev) else "fp32"
        if name == "fp32":
            log.info("precision auto: %s has no native bf16, running fp32", _describe(dev))
    elif name == "bf16" and not native_bf16(dev):
        _warn_once(f"bf16:{dev.type}",
                   f"--precision bf16: {_describe(dev)} has no native bf16 (AVX512-BF16/AMX "
                   f"CPU or CUDA compute capability >= 8.0); it runs emulated, slower than "
                   f"fp32 (--precision auto picks fp32 here)")
    elif name == "fp16" and dev.type == "cpu" and not cpu_native_fp16():
        raise ConfigError("--precision fp16 needs a CUDA or MPS device or a CPU with "
                          "AMX-FP16; on this CPU use bf16 or auto")
    return Precision(name, dev)


def _describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        with contextlib.suppress(Exception):
            return f"{dev} ({torch.cuda.get_device_name(dev)})"
        return str(dev)
    return f"this {dev.type.upper()}"


# ---------------------------------------------------------------------------- cast copies

_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[Any, nn.Module]] = \
    weakref.WeakKeyDictionary()


def _state_key(model: nn.Module, dtype: torch.dtype) -> tuple[Any, ...]:
    """Changes whenever a weight is replaced or modified in place (an optimiser step,
    ``load_state_dict``, ``.to()``): tensor identity, storage and version counter."""
    tensors = [*model.parameters(), *model.buffers()]
    return (dtype, tuple((id(t), t.data_ptr(), t._version, t.device) for t in tensors))


def cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` with its floating-point weights and buffers cast to ``dtype``
    (same device and memory format), made without a second fp32 copy and cached while
    ``model``'s weights stay the same (a training step or ``load_state_dict`` makes a new
    one at the next call). The copy holds no reference to ``model``."""
    key = _state_key(model, dtype)
    hit = _COPIES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    memo: dict[int, Any] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            low = t.detach().to(dtype)
            if t.dim() == 4:  # keep the memory format (channels-last conv weights)
                fmt = (torch.channels_last if t.is_contiguous(memory_format=torch.channels_last)
                       and not t.is_contiguous() else torch.contiguous_format)
                low = low.contiguous(memory_format=fmt)
            memo[id(t)] = nn.Parameter(low, requires_grad=False) if isinstance(
                t, nn.Parameter) else low
    _COPIES.pop(model, None)  # the old copy is freed before the deepcopy
    clone = copy.deepcopy(model, memo)
    clone.eval()
    _COPIES[model] = (key, clone)
    return clone
