"""The one learning-rate schedule (`lr_schedule.warmup_cosine`) in the three shapes the trainers use."""

from __future__ import annotations

import math

import pytest

from sopo_ray.lr_schedule import warmup_cosine


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_warm_up_then_cosine_down_to_the_floor(floor):
    lrs = [warmup_cosine(s, 100, 10, 2.0, floor) for s in range(110)]
    assert lrs[:10] == pytest.approx([2.0 * (s + 1) / 10 for s in range(10)])          # linear ramp to the peak
    assert lrs[10] == pytest.approx(2.0) and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[55] == pytest.approx(2.0 * (floor + (1 - floor) / 2))                   # half-way down the cosine
    assert lrs[100:] == pytest.approx([2.0 * floor] * 10)                              # held at the floor after
    assert warmup_cosine(0, 100, 0, 2.0, floor) == 2.0                                 # no warm-up: starts at the peak


def test_the_overlapping_shape_ramps_over_a_cosine_that_starts_at_step_0():
    factors = [warmup_cosine(s, 100, 10, overlap=True) for s in range(101)]
    cosine = [0.5 * (1 + math.cos(math.pi * s / 100)) for s in range(101)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 * cosine[s] for s in range(10)])
    assert factors[10:] == pytest.approx(cosine[10:]) and factors[-1] == pytest.approx(0.0)
