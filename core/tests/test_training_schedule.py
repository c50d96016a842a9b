"""The learning rate at hand-computed steps of openpi's warm-up + cosine schedule."""

import math

import pytest

from openpi_core.training.config import CosineDecaySchedule
from openpi_core.training.schedule import learning_rate

SCHEDULE = CosineDecaySchedule(warmup_steps=10, peak_lr=1.0, decay_steps=110, decay_lr=0.1)


def test_step_zero_is_peak_over_warmup_plus_one():
    assert learning_rate(SCHEDULE, 0) == pytest.approx(1.0 / 11)


def test_warmup_is_linear():
    init = 1.0 / 11
    assert learning_rate(SCHEDULE, 5) == pytest.approx(init + (1.0 - init) * 0.5)


def test_end_of_warmup_is_peak():
    assert learning_rate(SCHEDULE, 10) == pytest.approx(1.0)


def test_middle_of_decay_is_the_cosine_midpoint():
    assert learning_rate(SCHEDULE, 60) == pytest.approx((1.0 + 0.1) / 2)


def test_quarter_of_decay_follows_the_cosine():
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert learning_rate(SCHEDULE, 35) == pytest.approx(expected)


@pytest.mark.parametrize("step", [110, 111, 10_000])
def test_after_decay_is_decay_lr(step):
    assert learning_rate(SCHEDULE, step) == pytest.approx(0.1)


def test_openpi_defaults():
    default = CosineDecaySchedule()
    assert learning_rate(default, 0) == pytest.approx(2.5e-5 / 1001)
    assert learning_rate(default, 1_000) == pytest.approx(2.5e-5)
    assert learning_rate(default, 30_000) == pytest.approx(2.5e-6)
