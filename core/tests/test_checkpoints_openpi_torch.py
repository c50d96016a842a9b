"""Canonical <-> openpi-PyTorch / LeRobot state dicts, on models where every size differs."""

import attrs
import numpy as np
import pytest

from openpi_core.checkpoints.openpi_torch import (
    EMBEDDING,
    EMBEDDING_ALIAS,
    EXPERT,
    LLM,
    UNUSED_EXPERT_HEAD,
    VISION,
    canonical_from_openpi_torch,
    infer_config_from_openpi_torch,
    openpi_torch_from_canonical,
    openpi_torch_schema,
)
from openpi_core.errors import WeightsError
from openpi_core.models.config import GEMMA_VARIANTS, SIGLIP_VARIANTS, GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema

D, N, K, H = 2, 4, 2, 8  # depth, query heads, kv heads, head dim: N*H != width, K > 1


def odd_config(pi05: bool) -> Pi0Config:
    llm = GemmaConfig(width=16, depth=D, mlp_dim=24, num_heads=N, num_kv_heads=K, head_dim=H)
    return Pi0Config(
        llm=llm,
        action_expert=attrs.evolve(llm, width=12, mlp_dim=20),
        vision=SiglipConfig(width=8, depth=3, mlp_dim=12, num_heads=2, image_size=(28, 42)),
        vocab_size=32,
        pi05=pi05,
        action_dim=6,
        dtype="float32",
    )


def random_params(config: Pi0Config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in pi0_weight_schema(config).items()}


@pytest.fixture(params=[False, True], ids=["pi0", "pi05"])
def case(request):
    config = odd_config(request.param)
    return config, random_params(config)


def test_round_trip_is_exact(case):
    config, params = case
    back = canonical_from_openpi_torch(openpi_torch_from_canonical(params, config), config)
    assert set(back) == set(params)
    for name, array in params.items():
        assert back[name].dtype == array.dtype and np.array_equal(back[name], array), name


def test_attention_projections_follow_the_general_mapping(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    for prefix, root in (("llm", LLM), ("expert", EXPERT)):
        width = getattr(config, "llm" if prefix == "llm" else "action_expert").width
        q, kv, o = (params[f"{prefix}.layers.attn.{p}"] for p in ("q_proj", "kv_proj", "o_proj"))
        layer = 1
        torch_q = state[f"{root}layers.{layer}.self_attn.q_proj.weight"]
        torch_k = state[f"{root}layers.{layer}.self_attn.k_proj.weight"]
        torch_v = state[f"{root}layers.{layer}.self_attn.v_proj.weight"]
        torch_o = state[f"{root}layers.{layer}.self_attn.o_proj.weight"]
        assert torch_q.shape == (N * H, width) and torch_k.shape == (K * H, width)
        assert torch_o.shape == (width, N * H)
        n, h, d, k = 3, 5, width - 1, 1
        assert torch_q[n * H + h, d] == q[layer, n, d, h]
        assert torch_k[k * H + h, d] == kv[layer, 0, k, d, h]
        assert torch_v[k * H + h, d] == kv[layer, 1, k, d, h]
        assert torch_o[d, n * H + h] == o[layer, n, h, d]


def test_vision_and_dense_layouts(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    patch = state[VISION + "embeddings.patch_embedding.weight"]
    assert patch.shape == (8, 3, 14, 14)
    assert patch[7, 2, 13, 1] == params["vision.patch_embed.kernel"][13, 1, 2, 7]
    assert state[VISION + "embeddings.position_embedding.weight"].shape == (6, 8)  # 2x3 patches
    query = state[VISION + "encoder.layers.2.self_attn.q_proj.weight"]
    assert query[1 * 4 + 3, 5] == params["vision.layers.attn.query.kernel"][2, 5, 1, 3]
    bias = state[VISION + "encoder.layers.2.self_attn.q_proj.bias"]
    assert bias[1 * 4 + 3] == params["vision.layers.attn.query.bias"][2, 1, 3]
    out = state[VISION + "encoder.layers.0.self_attn.out_proj.weight"]
    assert out[6, 1 * 4 + 2] == params["vision.layers.attn.out.kernel"][0, 1, 2, 6]
    assert np.array_equal(state["action_in_proj.weight"], params["action_in_proj.kernel"].T)
    gate, up = (state[f"{EXPERT}layers.0.mlp.{p}_proj.weight"] for p in ("gate", "up"))
    assert np.array_equal(gate, params["expert.layers.mlp.gate_up"][0, 0].T)
    assert np.array_equal(up, params["expert.layers.mlp.gate_up"][0, 1].T)
    if config.pi05:
        dense = state[f"{EXPERT}layers.1.post_attention_layernorm.dense.weight"]
        assert np.array_equal(dense, params["expert.layers.mlp_norm.modulation.kernel"][1].T)
        assert np.array_equal(state[f"{EXPERT}norm.dense.bias"], params["expert.final_norm.modulation.bias"])
        assert f"{EXPERT}norm.weight" not in state and "time_mlp_in.weight" in state
    else:
        assert np.array_equal(state[f"{EXPERT}norm.weight"], params["expert.final_norm.scale"])
        assert "state_proj.weight" in state and "time_mlp_in.weight" not in state


def test_tied_embedding_and_unused_expert_head(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    assert np.array_equal(state[EMBEDDING], params["llm.embedding"])
    assert EMBEDDING_ALIAS not in state
    assert state[UNUSED_EXPERT_HEAD].shape == (config.vocab_size, config.action_expert.width)
    assert not state[UNUSED_EXPERT_HEAD].any()
    # On import the unused head is ignored, whatever it holds, and may be absent.
    state[UNUSED_EXPERT_HEAD] = np.ones_like(state[UNUSED_EXPERT_HEAD])
    assert np.array_equal(canonical_from_openpi_torch(state, config)["llm.embedding"], params["llm.embedding"])
    del state[UNUSED_EXPERT_HEAD]
    canonical_from_openpi_torch(state, config)


def test_embedding_may_come_as_embed_tokens(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    state[EMBEDDING_ALIAS] = state.pop(EMBEDDING)
    assert np.array_equal(canonical_from_openpi_torch(state, config)["llm.embedding"], params["llm.embedding"])
    state[EMBEDDING] = state[EMBEDDING_ALIAS] + 1
    with pytest.raises(WeightsError, match="tied but hold different values"):
        canonical_from_openpi_torch(state, config)


def test_lerobot_model_prefix_is_accepted(case):
    config, params = case
    state = {f"model.{key}": value for key, value in openpi_torch_from_canonical(params, config).items()}
    back = canonical_from_openpi_torch(state, config)
    assert all(np.array_equal(back[name], params[name]) for name in params)


def test_shape_mismatch_names_the_key_and_both_shapes(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    key = f"{LLM}layers.1.self_attn.o_proj.weight"
    state[key] = np.zeros((16, 31), np.float32)
    with pytest.raises(WeightsError, match=rf"'{key}' should have shape \[16, 32\], found \[16, 31\]"):
        canonical_from_openpi_torch(state, config)


def test_missing_and_unexpected_keys_are_named(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    key = f"{EXPERT}layers.1.mlp.up_proj.weight"
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(WeightsError, match=rf"missing parameter '{key}'"):
        canonical_from_openpi_torch(missing, config)
    with pytest.raises(WeightsError, match=r"unexpected parameters \['normalize_inputs.mean'\]"):
        canonical_from_openpi_torch({**state, "normalize_inputs.mean": np.zeros(3)}, config)
    # A third layer the config does not have.
    extra = {**state, f"{EXPERT}layers.2.mlp.up_proj.weight": state[key]}
    with pytest.raises(WeightsError, match=r"layers\.2\.mlp\.up_proj"):
        canonical_from_openpi_torch(extra, config)


@pytest.mark.parametrize("pi05", [False, True])
def test_config_inference_for_released_sizes(pi05):
    config = Pi0Config(
        llm=GEMMA_VARIANTS["gemma_2b"],
        action_expert=GEMMA_VARIANTS["gemma_300m"],
        vision=SIGLIP_VARIANTS["So400m/14"],
        pi05=pi05,
        dtype="float32",
    )
    # Shapes only: a zero-strided array per tensor, nothing of 3B parameters allocated.
    state = {key: np.broadcast_to(np.float32(0), shape) for key, shape in openpi_torch_schema(config).items()}
    assert infer_config_from_openpi_torch(state) == config
    assert infer_config_from_openpi_torch({f"model.{k}": v for k, v in state.items()}) == config


def test_torch_schema_lists_what_the_exporter_writes(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    assert {key: value.shape for key, value in state.items()} == openpi_torch_schema(config)


def test_config_inference_needs_a_known_vision_tower(case):
    config, params = case
    state = openpi_torch_from_canonical(params, config)
    with pytest.raises(WeightsError, match=r"SigLIP attention heads.*width 8, depth 3, mlp dim 12"):
        infer_config_from_openpi_torch(state)
