"""The learning rate at a step, computed once here so both backends use the same numbers."""

import math

from openpi_core.training.config import CosineDecaySchedule


def learning_rate(schedule: CosineDecaySchedule, step: int) -> float:
    """``lr`` for optimizer update number ``step`` (0-based), as optax's
    ``warmup_cosine_decay_schedule`` with openpi's arguments computes it."""
    init = schedule.peak_lr / (schedule.warmup_steps + 1)
    if step < schedule.warmup_steps:
        return init + (schedule.peak_lr - init) * step / schedule.warmup_steps
    decay_span = max(schedule.decay_steps - schedule.warmup_steps, 1)
    progress = min(step - schedule.warmup_steps, decay_span) / decay_span
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return schedule.decay_lr + (schedule.peak_lr - schedule.decay_lr) * cosine
