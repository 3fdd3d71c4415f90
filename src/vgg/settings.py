"""One set of rules for every setting, whether it comes from a flag, a YAML file or Python.

Each check returns the value (normalised: an ``int`` stays an ``int``, a float setting
given as ``3`` becomes ``3.0``) or raises ``ConfigError`` with a message that names the
setting as a user typed it (``epochs (--epochs)``). NaN and infinities are refused for
every float setting, booleans are not numbers, and ``1.5`` is not an integer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError

# Limits shared by the commands (so that `--workers 99999999999` or `--scales 99999999`
# is an error before anything is forked or allocated).
MAX_WORKERS = 128
MAX_BATCH = 65_536
MAX_SIDE = 8_192        # test / training scale and crop, in pixels
MAX_SEED = 2**63 - 1


def label(name: str) -> str:
    """``micro_batch`` -> ``micro_batch (--micro-batch)``."""
    return f"{name} (--{name.replace('_', '-')})"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool, not 1.5, not "3") within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)  # YAML `epochs: 30.0`
        else:
            raise ConfigError(f"{label(name)} must be an integer "
                              f"{_range_text(lo, hi, False, False)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{label(name)} must be an integer "
                          f"{_range_text(lo, hi, False, False)}, got {value}")
    return int(value)


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite number within the range (open or closed at either end)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{label(name)} must be a number "
                          f"{_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if lo is not None:
        bad = bad or (v <= lo if lo_open else v < lo)
    if hi is not None:
        bad = bad or (v >= hi if hi_open else v > hi)
    if bad:
        raise ConfigError(f"{label(name)} must be a finite number "
                          f"{_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{label(name)} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{label(name)} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def check_str(name: str, value: Any, allow_none: bool = True) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label(name)} must be a non-empty string, got {value!r}")
    return value


def check_workers(value: Any, name: str = "workers") -> int | None:
    """Loader processes: None (automatic) or 0..MAX_WORKERS."""
    return None if value is None else check_int(name, value, 0, MAX_WORKERS)


def check_scales(name: str, values: Sequence[Any], lo: int = 1) -> list[int]:
    """Image sides in pixels (test scales Q, training scales S): sorted, unique."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{label(name)} must be a non-empty list of integers, "
                          f"got {values!r}")
    return sorted({check_int(name, v, lo, MAX_SIDE) for v in values})
