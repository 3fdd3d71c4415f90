"""The Sect. 3.1 learning-rate schedule: divide by 10 on a plateau of the validation
top-1 error, three decreases, then stop."""

from __future__ import annotations

import math

import pytest

from vgg.errors import ConfigError
from vgg.train import PlateauSchedule


def test_improving_error_keeps_lr() -> None:
    s = PlateauSchedule(lr=0.01, patience=1)
    assert [s.step(e) for e in (0.9, 0.8, 0.7, 0.6)] == ["improved"] * 4
    assert s.lr == 0.01 and s.decreases == 0 and not s.done


def test_plateau_three_decreases_then_stop() -> None:
    s = PlateauSchedule(lr=0.01, patience=1, threshold=0.0)
    actions = [s.step(e) for e in (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)]
    # 1 improvement, then (wait, decrease) x 3, then wait, stop
    assert actions == ["improved", "wait", "decrease", "wait", "decrease", "wait",
                       "decrease", "wait", "stop"]
    assert s.lr == pytest.approx(1e-5)
    assert s.decreases == 3 and s.done
    assert s.step(0.1) == "stop"  # stays stopped


def test_patience_zero_decreases_at_first_flat_epoch() -> None:
    s = PlateauSchedule(lr=1.0, patience=0, threshold=0.0)
    assert s.step(0.5) == "improved"
    assert s.step(0.6) == "decrease" and s.lr == pytest.approx(0.1)
    assert s.step(0.4) == "improved" and s.bad_epochs == 0


def test_threshold_is_absolute_in_error_units() -> None:
    s = PlateauSchedule(lr=0.01, patience=0, threshold=0.01)
    s.step(0.50)
    assert s.step(0.495) == "decrease"  # 0.5 points better: not enough
    assert s.step(0.48) == "improved"   # 2 points better than the best (0.50)


def test_improvement_resets_patience() -> None:
    s = PlateauSchedule(lr=0.01, patience=2, threshold=0.0)
    assert [s.step(e) for e in (0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4)] == [
        "improved", "wait", "wait", "improved", "wait", "wait", "decrease"]


def test_zero_decreases_stops_at_first_plateau() -> None:
    s = PlateauSchedule(lr=0.01, patience=0, threshold=0.0, max_decreases=0)
    s.step(0.3)
    assert s.step(0.3) == "stop" and s.done and s.lr == 0.01


def test_state_dict_round_trip_including_infinite_best() -> None:
    s = PlateauSchedule(lr=0.01, patience=1)
    d = s.state_dict()
    assert d["best"] is None  # no inf in checkpoints
    t = PlateauSchedule()
    t.load_state_dict(d)
    assert math.isinf(t.best)
    s.step(0.4), s.step(0.4), s.step(0.4)
    t.load_state_dict(s.state_dict())
    assert (t.lr, t.best, t.decreases, t.bad_epochs) == (s.lr, s.best, s.decreases,
                                                         s.bad_epochs)
    assert t.step(0.4) == s.step(0.4)


@pytest.mark.parametrize("kw", [{"lr": 0}, {"factor": 1.0}, {"patience": -1},
                                {"threshold": -0.1}, {"max_decreases": -1}])
def test_bad_settings_raise_config_error(kw: dict) -> None:
    with pytest.raises(ConfigError):
        PlateauSchedule(**kw)


def test_cosine_anneals_to_zero_after_warmup() -> None:
    from vgg.train import LrSchedule

    s = LrSchedule.make("cosine", 0.1, 0.1, 2, 1e-3, 3, total_steps=100, warmup_steps=10)
    lrs = [s.lr_at(t) for t in range(100)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)  # linear warm-up
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[55] == pytest.approx(0.05, rel=1e-6)  # half-way through the cosine
    assert lrs[-1] < 1e-4 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert s.epoch_end(0.5) == "improved" and s.epoch_end(0.6) == "wait" and not s.done


def test_step_schedule_divides_evenly_and_plateau_warmup() -> None:
    from vgg.train import LrSchedule

    s = LrSchedule.make("step", 0.1, 0.1, 2, 1e-3, 3, total_steps=80, warmup_steps=0)
    assert [s.lr_at(t) for t in (0, 19, 20, 39, 40, 60, 79)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 1e-4, 1e-4])
    p = LrSchedule.make("plateau", 0.1, 0.1, 0, 0.0, 3, total_steps=50, warmup_steps=4)
    assert [p.lr_at(t) for t in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    p.epoch_end(0.5)
    p.epoch_end(0.5)  # patience 0: decrease
    assert p.lr_at(20) == pytest.approx(0.01)
    # state round trip (resume)
    q = LrSchedule.make("plateau", 0.1, 0.1, 0, 0.0, 3, total_steps=50, warmup_steps=4)
    q.load_state_dict(p.state_dict())
    assert q.lr_at(20) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="cosine"):
        LrSchedule.make("step", 0.1, 0.1, 0, 0.0, 3, 50, 0).load_state_dict(
            LrSchedule.make("cosine", 0.1, 0.1, 0, 0.0, 3, 50, 0).state_dict())


@pytest.mark.parametrize("kind", ["cosine", "step"])
@pytest.mark.parametrize("new_total", [200, 60])
def test_resume_with_another_horizon_keeps_the_rate_and_ends_at_the_new_end(
        kind: str, new_total: int) -> None:
    """Issue 24 item 7: `--resume RUN --epochs N` (another horizon) must not make the rate
    jump; the rest of the curve is stretched (or squeezed) to the new end."""
    from vgg.train import LrSchedule

    def make(total: int) -> LrSchedule:
        return LrSchedule.make(kind, 0.1, 0.1, 2, 1e-3, 3, total_steps=total, warmup_steps=10)

    old = make(100)
    r0 = 50  # the run stopped here
    new = make(new_total)
    assert new.load_state_dict(old.state_dict(), step=r0) is True
    assert new.lr_at(r0) == pytest.approx(old.lr_at(r0))  # no jump (main: 0.085 vs 0.05)
    lrs = [new.lr_at(t) for t in range(r0, new_total)]
    assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:]))  # still annealing
    if kind == "cosine":
        assert lrs[-1] < 0.03 * old.lr_at(r0)
        assert new.lr_at(new_total) == 0.0
    else:  # the decreases not yet passed (2 of 3) are spread over what remains
        assert old.lr_at(r0) == pytest.approx(0.01) and lrs[-1] == pytest.approx(1e-4)
        assert sorted(set(round(v, 9) for v in lrs)) == pytest.approx([1e-4, 1e-3, 1e-2])
    # the re-anchored schedule is saved and resumes exactly (same horizon: no re-anchor)
    again = make(new_total)
    assert again.load_state_dict(new.state_dict(), step=r0 + 7) is False
    assert [again.lr_at(t) for t in range(r0, new_total)] == pytest.approx(lrs)
    # the same horizon keeps the curve as it was
    same = make(100)
    assert same.load_state_dict(old.state_dict(), step=r0) is False
    assert [same.lr_at(t) for t in range(100)] == [old.lr_at(t) for t in range(100)]


def test_resume_with_another_horizon_during_warmup_finishes_the_warmup() -> None:
    from vgg.train import LrSchedule

    old = LrSchedule.make("cosine", 0.1, 0.1, 2, 1e-3, 3, total_steps=100, warmup_steps=10)
    new = LrSchedule.make("cosine", 0.1, 0.1, 2, 1e-3, 3, total_steps=300, warmup_steps=10)
    new.load_state_dict(old.state_dict(), step=4)
    assert [new.lr_at(t) for t in range(4, 11)] == pytest.approx(
        [old.lr_at(t) for t in range(4, 11)])  # the warm-up to 0.1 is not changed
    assert new.lr_at(155) == pytest.approx(0.05, rel=1e-6)  # half-way to the new end
