"""LoRA adapter shapes (the table of openpi_core.training.lora) and the freezing rule."""

import numpy as np
import pytest

from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.training.config import LoRAConfig, TrainConfig
from openpi_core.training.lora import init_lora, is_trainable, lora_schema, lora_shapes

D, N, K, W, H, M, R = 3, 4, 1, 16, 8, 32, 2


@pytest.mark.parametrize(
    ("base", "a", "b"),
    [
        ((D, N, W, H), (D, N, W, R), (D, N, R, H)),  # q_proj
        ((D, 2, K, W, H), (D, 2, K, W, R), (D, 2, K, R, H)),  # kv_proj
        ((D, N, H, W), (D, N, H, R), (D, N, R, W)),  # o_proj
        ((D, 2, W, M), (D, 2, W, R), (D, 2, R, M)),  # gate_up
        ((D, M, W), (D, M, R), (D, R, W)),  # down
    ],
    ids=["q_proj", "kv_proj", "o_proj", "gate_up", "down"],
)
def test_adapter_shapes_follow_the_table(base, a, b):
    assert lora_shapes(base, R) == (a, b)
    assert (np.zeros(a) @ np.zeros(b)).shape == base


def tiny_config() -> Pi0Config:
    return Pi0Config(
        llm=GEMMA_VARIANTS["dummy"],
        action_expert=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=32, depth=1, mlp_dim=64, num_heads=2, image_size=(28, 28)),
        vocab_size=64,
        action_dim=8,
        action_horizon=4,
    )


def test_lora_schema_adapts_each_chosen_expert():
    schema = pi0_weight_schema(tiny_config())
    train = TrainConfig("x", llm_lora=LoRAConfig(rank=4, alpha=8.0), expert_lora=LoRAConfig(rank=2, alpha=2.0))
    extra = lora_schema(schema, train)
    assert len(extra) == 2 * 5 * 2
    assert extra["llm.layers.attn.q_proj.lora_a"] == (*schema["llm.layers.attn.q_proj"][:-1], 4)
    assert extra["expert.layers.mlp.down.lora_b"] == (schema["expert.layers.mlp.down"][0], 2, 64)
    for name, shape in extra.items():
        if name.endswith(".lora_a"):
            base = name.removesuffix(".lora_a")
            assert (np.zeros(shape) @ np.zeros(extra[f"{base}.lora_b"])).shape == schema[base]


def test_no_lora_means_no_adapters():
    assert lora_schema(pi0_weight_schema(tiny_config()), TrainConfig("x")) == {}


def test_init_lora_is_seeded_small_float32_noise():
    schema = pi0_weight_schema(tiny_config())
    train = TrainConfig("x", expert_lora=LoRAConfig(rank=4, alpha=4.0))
    first, again, other = init_lora(schema, train, 0), init_lora(schema, train, 0), init_lora(schema, train, 1)
    assert sorted(first) == sorted(lora_schema(schema, train))
    assert all(value.dtype == np.float32 for value in first.values())
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["expert.layers.attn.q_proj.lora_a"], other["expert.layers.attn.q_proj.lora_a"])
    values = np.concatenate([value.ravel() for value in first.values()])
    assert np.std(values) == pytest.approx(0.01, rel=0.1)


def test_scale_is_alpha_over_rank():
    assert LoRAConfig(rank=16, alpha=32.0).scale == 2.0


@pytest.mark.parametrize(
    ("llm_lora", "expert_lora", "frozen"),
    [(False, False, set()), (True, False, {"llm"}), (False, True, {"expert"}), (True, True, {"llm", "expert"})],
)
def test_is_trainable_freezes_only_the_adapted_experts(llm_lora, expert_lora, frozen):
    lora = LoRAConfig(rank=2, alpha=2.0)
    train = TrainConfig("x", llm_lora=lora if llm_lora else None, expert_lora=lora if expert_lora else None)
    names = {
        "llm": ["llm.embedding", "llm.layers.attn.q_proj", "llm.final_norm.scale"],
        "expert": ["expert.layers.mlp.down", "expert.final_norm.scale"],
        "vision": ["vision.patch_embed.kernel", "vision.head.kernel"],
        "other": ["action_in_proj.kernel", "state_proj.bias", "time_mlp_in.kernel"],
    }
    for group, group_names in names.items():
        for name in group_names:
            assert is_trainable(name, train) == (group not in frozen), name
    for name in ("llm.layers.attn.q_proj.lora_a", "expert.layers.mlp.down.lora_b"):
        assert is_trainable(name, train)
