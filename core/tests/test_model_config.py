"""π0 configs: openpi's variants, overrides, serialization, parameter counts."""

import pytest

from openpi_core.errors import InputError
from openpi_core.models.config import GEMMA_VARIANTS, GemmaConfig, Pi0Config
from openpi_core.models.pi0_weights import count_parameters, pi0_weight_schema
from openpi_core.serialization import structure, unstructure


def test_openpi_defaults():
    pi0, pi05 = Pi0Config(), Pi0Config(pi05=True)
    assert (pi0.max_token_len, pi05.max_token_len) == (48, 200)
    assert (pi0.discrete_state_input, pi05.discrete_state_input) == (False, True)
    assert pi0.llm.width == 2048 and pi0.action_expert.width == 1024 and pi0.vision.width == 1152
    assert pi0.action_horizon == 50 and pi0.action_dim == 32 and pi0.dtype == "bfloat16"
    assert pi0.vision.num_patches == 256


def test_full_pi0_counts_about_3_3_billion_parameters_without_allocating():
    # Counted by hand for the largest pieces: Gemma-2B embedding 257152 x 2048, and per
    # layer of the 2B LLM: q 8*2048*256 + kv 2*1*2048*256 + o 8*256*2048 + mlp 3*2048*16384.
    embedding = 257_152 * 2048
    llm_layer = 8 * 2048 * 256 * 2 + 2 * 2048 * 256 + 3 * 2048 * 16_384
    count = count_parameters(pi0_weight_schema(Pi0Config()))
    assert count > embedding + 18 * llm_layer
    assert 3.2e9 < count < 3.4e9


def test_pi05_swaps_state_and_time_mlps_for_adaptive_norms():
    schema = pi0_weight_schema(Pi0Config.from_variants("dummy", "dummy", pi05=True))
    assert "state_proj.kernel" not in schema and "time_mlp_in.kernel" in schema
    assert schema["expert.layers.attn_norm.modulation.kernel"] == (4, 64, 192)
    assert "llm.layers.attn_norm.scale" in schema


def test_experts_must_agree_on_attention_shape():
    with pytest.raises(InputError, match="num_heads"):
        Pi0Config(llm=GEMMA_VARIANTS["dummy"], action_expert=GemmaConfig(64, 4, 128, 4, 1, 16))
    with pytest.raises(InputError, match="depth"):
        Pi0Config(llm=GEMMA_VARIANTS["dummy"], action_expert=GemmaConfig(64, 2, 128, 8, 1, 16))


def test_unknown_variant_and_dtype_are_clear():
    with pytest.raises(InputError, match="unknown Gemma variant 'gemma_7b'"):
        Pi0Config.from_variants("gemma_7b")
    with pytest.raises(InputError, match="dtype should be one of"):
        Pi0Config(dtype="float16")


def test_plain_dict_round_trip_and_bad_keys():
    config = Pi0Config.from_variants("dummy", "dummy", pi05=True, action_horizon=10, dtype="float32")
    data = unstructure(config)
    assert data["llm"]["width"] == 64 and data["max_token_len"] == 200
    assert structure(data, Pi0Config) == config
    data["llm"]["widht"] = 3
    with pytest.raises(InputError, match="widht"):
        structure(data, Pi0Config)
