"""Test scales Q (Sect. 3.2): the paper's defaults for a net's training scale S, and the
checks on scales a user gives."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..settings import check_scales as _check_sides

log = logging.getLogger(__name__)

PAPER_CROP = 224
PAPER_SCALE_STEP = 32  # Q = {S-32, S, S+32} for 224 crops


def crop_train_scale(crop: int) -> int:
    """The fixed training scale a net of this crop is assumed to have when its checkpoint
    does not say: the paper's 256 for 224 crops, scaled (round(crop * 256 / 224))."""
    return int(round(crop * 256 / PAPER_CROP))


def default_scales(train_scale: Sequence[int] | int | None, crop: int = PAPER_CROP,
                   multi_scale: bool = True) -> list[int]:
    """Sect. 3.2 test scales Q for a net trained at ``train_scale`` (S or [s_min, s_max]).

    Fixed S: Q = {S-32, S, S+32}; jittered: Q = {s_min, (s_min+s_max)/2, s_max}. Single
    scale (``multi_scale=False``): Q = S, or the middle of the range. The step 32 is the
    paper's for 224 crops and scales with the crop (5 pixels for a 32 crop). Q below the
    crop is raised to the crop (logged). ``None`` means S = round(crop * 256 / 224).
    """
    if train_scale is None:
        s_min = s_max = crop_train_scale(crop)
    elif isinstance(train_scale, (int, np.integer)):
        s_min = s_max = int(train_scale)
    else:
        ts = [int(v) for v in train_scale]
        if len(ts) == 1:
            ts = ts * 2
        if len(ts) != 2 or ts[0] > ts[1] or ts[0] < 1:
            raise ConfigError(f"train scale must be S or [s_min, s_max] with s_min <= s_max, "
                              f"got {list(train_scale)}")
        s_min, s_max = ts
    mid = (s_min + s_max) // 2
    if not multi_scale:
        qs = [mid]
    elif s_min == s_max:
        step = max(1, int(round(PAPER_SCALE_STEP * crop / PAPER_CROP)))
        qs = [s_min - step, s_min, s_min + step]
    else:
        qs = [s_min, mid, s_max]
    if min(qs) < crop:
        log.info("test scales %s raised to at least the crop %d", qs, crop)
    return sorted(set(max(q, crop) for q in qs))


def parse_scales(text: str) -> list[int]:
    """``"256,384,512"`` -> [256, 384, 512]; ConfigError on anything else."""
    try:
        qs = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"--scales wants comma-separated integers like 256,384,512, "
                          f"got {text!r}") from None
    if not qs:
        raise ConfigError(f"--scales wants positive integers, got {text!r}")
    return _check_sides("scales", qs)


def check_scales(scales: Sequence[int], crop: int, name: str) -> list[int]:
    qs = _check_sides("scales", list(scales))
    small = [q for q in qs if q < crop]
    if small:
        raise ConfigError(f"test scale(s) {small} smaller than the crop {crop} of {name}: "
                          f"the image's smaller side Q must be >= the crop")
    return qs
