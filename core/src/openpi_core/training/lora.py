"""LoRA adapter parameters and which parameters train, for both backends.

An adapted projection ``W`` (canonical layout, e.g. ``q_proj`` ``[D, N, W, h]``) gets
``<name>.lora_a`` and ``<name>.lora_b`` such that the effective weight is
``W + scale * (lora_a @ lora_b)``, a matrix product over the last two axes (the
rank axis contracted), with ``scale = alpha / rank``:

- ``q_proj`` ``[D, N, W, h]``: ``lora_a`` ``[D, N, W, r]``, ``lora_b`` ``[D, N, r, h]``
- ``kv_proj`` ``[D, 2, K, W, h]``: ``lora_a`` ``[D, 2, K, W, r]``, ``lora_b`` ``[D, 2, K, r, h]``
- ``o_proj`` ``[D, N, h, W]``: ``lora_a`` ``[D, N, h, r]``, ``lora_b`` ``[D, N, r, W]``
- ``gate_up`` ``[D, 2, W, M]``: ``lora_a`` ``[D, 2, W, r]``, ``lora_b`` ``[D, 2, r, M]``
- ``down`` ``[D, M, W]``: ``lora_a`` ``[D, M, r]``, ``lora_b`` ``[D, r, W]``

Both adapter matrices start as N(0, 0.01²) noise, as in openpi.
"""

from collections.abc import Mapping

import numpy as np

from openpi_core.errors import InputError
from openpi_core.training.config import LoRAConfig, TrainConfig

Shape = tuple[int, ...]

ADAPTED = ("layers.attn.q_proj", "layers.attn.kv_proj", "layers.attn.o_proj", "layers.mlp.gate_up", "layers.mlp.down")


def lora_shapes(shape: Shape, rank: int) -> tuple[Shape, Shape]:
    """Shapes of ``lora_a`` and ``lora_b`` for an adapted parameter of ``shape``."""
    return (*shape[:-1], rank), (*shape[:-2], rank, shape[-1])


def adapters(train: TrainConfig) -> dict[str, LoRAConfig]:
    """Expert prefix (``llm``, ``expert``) -> its adapter config, for the adapted experts."""
    chosen = {"llm": train.llm_lora, "expert": train.expert_lora}
    return {prefix: lora for prefix, lora in chosen.items() if lora is not None}


def lora_schema(schema: Mapping[str, Shape], train: TrainConfig) -> dict[str, Shape]:
    """Canonical name -> shape of every adapter parameter (empty without LoRA).

    Raises:
        InputError: adapters are asked for an expert the model does not have
            (``expert_lora`` on π0-FAST, whose single Gemma is ``llm``).
    """
    extra: dict[str, Shape] = {}
    for prefix, lora in adapters(train).items():
        names = [f"{prefix}.{suffix}" for suffix in ADAPTED if f"{prefix}.{suffix}" in schema]
        if not names:
            raise InputError(
                f"{prefix}_lora asks for adapters on {prefix!r}, but the model has no {prefix!r} weights; "
                f"its top-level weights are {sorted({name.split('.', 1)[0] for name in schema})}"
            )
        for name in names:
            a, b = lora_shapes(schema[name], lora.rank)
            extra[f"{name}.lora_a"], extra[f"{name}.lora_b"] = a, b
    return extra


def init_lora(schema: Mapping[str, Shape], train: TrainConfig, seed: int) -> dict[str, np.ndarray]:
    """Initial adapters, float32, N(0, 0.01²) from ``seed``."""
    rng = np.random.default_rng([seed, 7])
    params = {}
    for name, shape in sorted(lora_schema(schema, train).items()):
        params[name] = rng.normal(0.0, 0.01, shape).astype(np.float32)
    return params


def is_trainable(name: str, train: TrainConfig) -> bool:
    """Whether parameter ``name`` is updated: with LoRA on an expert, that expert's own
    weights (everything under ``llm.`` or ``expert.``, its embedding included) are frozen
    and its adapters train; every other parameter trains, as in openpi."""
    if name.endswith((".lora_a", ".lora_b")):
        return True
    prefix = name.split(".", 1)[0]
    return prefix not in adapters(train)
