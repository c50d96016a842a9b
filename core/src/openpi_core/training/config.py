"""Training configs: plain attrs classes that cattrs reads from TOML/JSON and the CLI.

Defaults are openpi's (AdamW b1 0.9, b2 0.95, eps 1e-8, weight decay 1e-10, global-norm
clipping 1.0; warm-up + cosine schedule 1k → 30k steps from 2.5e-5 to 2.5e-6; EMA 0.99).
"""

import attrs

from openpi_core.errors import InputError


@attrs.frozen
class AdamWConfig:
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 1e-10
    clip_gradient_norm: float = 1.0


@attrs.frozen
class CosineDecaySchedule:
    """Linear warm-up from ``peak_lr / (warmup_steps + 1)`` to ``peak_lr``, then cosine
    decay to ``decay_lr`` at ``decay_steps``; constant after."""

    warmup_steps: int = 1_000
    peak_lr: float = 2.5e-5
    decay_steps: int = 30_000
    decay_lr: float = 2.5e-6


@attrs.frozen
class LoRAConfig:
    """Low-rank adapters on one expert's attention (q, kv, o) and MLP (gate_up, down)."""

    rank: int
    alpha: float

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


GEMMA_2B_LORA = LoRAConfig(rank=16, alpha=16.0)
"""openpi's ``gemma_2b_lora`` adapters (the PaliGemma language model)."""
GEMMA_300M_LORA = LoRAConfig(rank=32, alpha=32.0)
"""openpi's ``gemma_300m_lora`` adapters (the action expert)."""


def _positive(_instance, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise InputError(f"{attribute.name} should be positive, got {value}")


@attrs.frozen
class EpisodeStartsConfig:
    """Oversample the first ``frames`` of every episode: each is visited ``repeats`` times
    per pass over the data, every other frame once
    (:class:`openpi_core.data.oversample.EpisodeStartOversampling`)."""

    frames: int = attrs.field(validator=_positive)
    repeats: int = attrs.field(validator=_positive)


@attrs.frozen
class TrainConfig:
    """Everything ``pi run train`` needs besides the model config and the data.

    ``llm_lora`` / ``expert_lora`` switch on adapters for the PaliGemma language model
    and the action expert; the adapted expert's own weights are then frozen (see
    :mod:`openpi_core.training.lora`). ``ema_decay`` None disables EMA; otherwise the EMA
    weights are the inference weights saved with each checkpoint.
    """

    exp_name: str
    batch_size: int = attrs.field(default=32, validator=_positive)
    num_train_steps: int = attrs.field(default=30_000, validator=_positive)
    seed: int = 42
    optimizer: AdamWConfig = attrs.field(factory=AdamWConfig)
    lr_schedule: CosineDecaySchedule = attrs.field(factory=CosineDecaySchedule)
    ema_decay: float | None = 0.99
    llm_lora: LoRAConfig | None = None
    expert_lora: LoRAConfig | None = None
    save_interval: int = attrs.field(default=1_000, validator=_positive)
    keep_period: int | None = 5_000
    log_interval: int = attrs.field(default=100, validator=_positive)
    checkpoint_base_dir: str = "./checkpoints"
    num_workers: int = 2
    fsdp_devices: int = 1
    gradient_checkpointing: bool = False
    augment: bool = True
    """openpi's training-time image augmentation (:mod:`openpi_core.data.augment`): random
    crop, resize and small rotation for every camera but the wrist ones, colour jitter
    for all. Seeded per step, so a resumed run sees the same images."""
    precision: str = "bfloat16"
    """Compute dtype of the training step: ``bfloat16`` (mixed precision with float32
    master weights) or ``float32``."""
    episode_starts: EpisodeStartsConfig | None = None
    """Oversample the first frames of every episode (None: every frame once per pass)."""
