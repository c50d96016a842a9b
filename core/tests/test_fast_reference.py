"""The π0-FAST reference set loads: its config, its prompts' masks and its weights."""

import attrs
import numpy as np
import pytest

from openpi_core.checkpoints import load_checkpoint, save_checkpoint
from openpi_core.checkpoints.openpi_jax import openpi_jax_from_canonical
from openpi_core.errors import WeightsError
from openpi_core.models.config import GemmaConfig, Pi0FASTConfig
from openpi_core.models.pi0_weights import pi0_fast_weight_schema
from openpi_core.reference import ReferenceSet, load_reference


@pytest.fixture(scope="module")
def ref(reference_root) -> ReferenceSet:
    return load_reference(reference_root / "pi0_fast")


def test_config_is_the_manifests(ref):
    recorded = ref.manifest["config"]
    config = ref.config
    assert isinstance(config, Pi0FASTConfig) and ref.family == config.family == "pi0_fast"
    for field in attrs.fields_dict(GemmaConfig):
        assert getattr(config.llm, field) == recorded["llm"][field], field
    assert config.vocab_size == recorded["llm"]["vocab_size"]
    vision = recorded["vision"]
    assert (config.vision.width, config.vision.depth, config.vision.mlp_dim, config.vision.num_heads) == (
        vision["width"],
        vision["depth"],
        vision["mlp_dim"],
        vision["num_heads"],
    )
    assert config.vision.patch_size == tuple(vision["patch_size"])
    assert config.vision.image_size == tuple(vision["image_resolution"])
    assert config.vision.num_patches == vision["num_patches"]
    for field in ("action_dim", "action_horizon", "max_token_len", "max_decoding_steps", "eos_token"):
        assert getattr(config, field) == recorded[field], field
    assert config.image_keys == tuple(recorded["image_keys"])
    assert config.dtype == recorded["dtype"]


def test_inference_prompt_is_all_prefix(ref):
    obs = ref.observation()
    assert obs.tokenized_prompt.shape == (2, ref.config.max_token_len)
    assert not obs.token_ar_mask.any() and not obs.token_loss_mask.any()
    assert set(obs.images) == set(ref.config.image_keys)


def test_training_prompt_has_openpis_masks(ref):
    obs = ref.observation("loss")
    inference = ref.observation()
    for row in range(obs.batch_size):
        mask, ar, loss = obs.tokenized_prompt_mask[row], obs.token_ar_mask[row], obs.token_loss_mask[row]
        prefix_len = int(inference.tokenized_prompt_mask[row].sum())
        valid = int(mask.sum())
        assert mask.tolist() == [True] * valid + [False] * (len(mask) - valid)
        assert np.array_equal(obs.tokenized_prompt[row, :prefix_len], inference.tokenized_prompt[row, :prefix_len])
        assert ar.tolist() == [0] * prefix_len + [1] * (valid - prefix_len) + [0] * (len(mask) - valid)
        assert np.array_equal(loss, ar == 1)
        assert obs.tokenized_prompt[row, valid - 1] == ref.config.eos_token
    np.testing.assert_array_equal(obs.images["base_0_rgb"], inference.images["base_0_rgb"])


def test_params_load_to_the_canonical_schema(ref):
    config, params = load_checkpoint(ref.openpi_params_path, ref.config)
    schema = pi0_fast_weight_schema(ref.config)
    assert config == ref.config
    assert sorted(params) == sorted(schema)
    for name, shape in schema.items():
        assert params[name].shape == shape and params[name].dtype == np.float32, name


def test_the_config_is_inferred_from_the_weights(ref):
    config, params = load_checkpoint(ref.openpi_params_path)
    assert isinstance(config, Pi0FASTConfig)
    assert (config.llm, config.vision, config.vocab_size) == (ref.config.llm, ref.config.vision, ref.config.vocab_size)
    assert sorted(params) == sorted(pi0_fast_weight_schema(ref.config))


def test_native_round_trip_keeps_the_family(ref, tmp_path):
    _, params = load_checkpoint(ref.openpi_params_path, ref.config)
    save_checkpoint(tmp_path / "native", ref.config, params)
    config, loaded = load_checkpoint(tmp_path / "native")
    assert config == ref.config
    for name, array in params.items():
        assert np.array_equal(loaded[name], array), name


def test_openpi_torch_has_no_fast(ref, tmp_path):
    _, params = load_checkpoint(ref.openpi_params_path, ref.config)
    with pytest.raises(WeightsError, match="π0-FAST"):
        save_checkpoint(tmp_path / "torch", ref.config, params, to="openpi-torch")


def test_fused_qkv_is_split_on_import_and_joined_on_export(ref):
    config = attrs.evolve(ref.config, llm=attrs.evolve(ref.config.llm, num_kv_heads=ref.config.llm.num_heads))
    rng = np.random.default_rng(0)
    params = {
        name: rng.standard_normal(shape).astype(np.float32) for name, shape in pi0_fast_weight_schema(config).items()
    }
    exported = openpi_jax_from_canonical(params)
    attn = "PaliGemma/llm/layers/attn/"
    assert f"{attn}q_einsum/w" not in exported and f"{attn}kv_einsum/w" not in exported
    fused = exported[f"{attn}qkv_einsum/w"]
    assert fused.shape == (config.llm.depth, 3, config.llm.num_heads, config.llm.width, config.llm.head_dim)
    assert np.array_equal(fused[:, 0], params["llm.layers.attn.q_proj"])
    assert np.array_equal(fused[:, 1:], params["llm.layers.attn.kv_proj"])
    inferred, imported = load_checkpoint(exported)
    assert inferred.llm == config.llm
    for name, array in params.items():
        assert np.array_equal(imported[name], array), name
