"""The native format: a bit-exact, atomic round trip of canonical weights and their config."""

import json

import attrs
import numpy as np
import pytest

from openpi_core.checkpoints import _io, load_native, save_native
from openpi_core.checkpoints.native import FORMAT, FORMAT_VERSION, MANIFEST, WEIGHTS, is_native
from openpi_core.errors import WeightsError
from openpi_core.models.config import GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.serialization import structure


def tiny_config(pi05: bool = False) -> Pi0Config:
    gemma = GemmaConfig(width=16, depth=2, mlp_dim=24, num_heads=4, num_kv_heads=1, head_dim=8)
    vision = SiglipConfig(width=8, depth=2, mlp_dim=12, num_heads=2, image_size=(28, 28))
    return Pi0Config(llm=gemma, action_expert=gemma, vision=vision, vocab_size=32, pi05=pi05, dtype="float32")


def random_params(config: Pi0Config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in pi0_weight_schema(config).items()}


@pytest.mark.parametrize("pi05", [False, True])
def test_float32_round_trip_is_bit_exact(tmp_path, pi05):
    config = tiny_config(pi05)
    params = random_params(config)
    # Values whose bits a lossy path would change: a NaN payload, -0.0, a subnormal.
    params["llm.embedding"].reshape(-1)[:3] = np.array([0x7FC00123, 0x80000000, 0x00000001], np.uint32).view(np.float32)
    save_native(tmp_path / "ckpt", config, params)
    loaded_config, loaded = load_native(tmp_path / "ckpt")
    assert loaded_config == config
    assert set(loaded) == set(params)
    for name, array in params.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name].view(np.uint32), array.view(np.uint32)), name


def test_manifest_records_format_family_config_and_dtype(tmp_path):
    config = tiny_config(pi05=True)
    save_native(tmp_path / "ckpt", config, random_params(config))
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert manifest["format"] == FORMAT and manifest["format_version"] == FORMAT_VERSION
    assert manifest["family"] == "pi05"
    assert manifest["dtype"] == "float32"
    assert structure(manifest["config"], Pi0Config) == config
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [MANIFEST, WEIGHTS]
    assert is_native(tmp_path / "ckpt")


def test_bfloat16_storage(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    config = tiny_config()
    params = random_params(config)
    save_native(tmp_path / "bf16", config, params, dtype="bfloat16")
    _, loaded = load_native(tmp_path / "bf16")
    assert json.loads((tmp_path / "bf16" / MANIFEST).read_text())["dtype"] == "bfloat16"
    for name, array in params.items():
        assert loaded[name].dtype == ml_dtypes.bfloat16
        assert np.array_equal(loaded[name], array.astype(ml_dtypes.bfloat16)), name
    # All-bfloat16 params stay bfloat16 by default; bfloat16 -> float32 is exact.
    save_native(tmp_path / "again", config, loaded)
    assert json.loads((tmp_path / "again" / MANIFEST).read_text())["dtype"] == "bfloat16"
    save_native(tmp_path / "wide", config, loaded, dtype="float32")
    _, wide = load_native(tmp_path / "wide")
    assert all(np.array_equal(wide[n], loaded[n].astype(np.float32)) for n in params)


def test_existing_directory_is_replaced_only_with_overwrite(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config, seed=1))
    with pytest.raises(WeightsError, match="already exists"):
        save_native(tmp_path / "ckpt", config, random_params(config, seed=2))
    new = random_params(config, seed=2)
    save_native(tmp_path / "ckpt", config, new, overwrite=True)
    _, loaded = load_native(tmp_path / "ckpt")
    assert np.array_equal(loaded["llm.embedding"], new["llm.embedding"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("openpi_core.checkpoints.native.write_safetensors", fail)
    config = tiny_config()
    with pytest.raises(OSError, match="disk full"):
        save_native(tmp_path / "ckpt", config, random_params(config))
    assert list(tmp_path.iterdir()) == []


def test_wrong_shape_names_parameter_and_both_shapes(tmp_path):
    config = tiny_config()
    params = random_params(config)
    params["expert.layers.mlp.down"] = np.zeros((2, 24, 15), np.float32)
    with pytest.raises(WeightsError, match=r"'expert\.layers\.mlp\.down'.*\[2, 24, 16\].*\[2, 24, 15\]"):
        save_native(tmp_path / "ckpt", config, params)


def test_given_config_overrides_the_stored_one(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    override = attrs.evolve(config, action_horizon=7)
    assert load_native(tmp_path / "ckpt", override)[0].action_horizon == 7


def test_manifest_dtype_must_match_the_tensors(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    (tmp_path / "ckpt" / MANIFEST).write_text(json.dumps({**manifest, "dtype": "bfloat16"}))
    with pytest.raises(WeightsError, match="stored as float32"):
        load_native(tmp_path / "ckpt")


def test_newer_format_version_is_refused(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    (tmp_path / "ckpt" / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(WeightsError, match="format_version"):
        load_native(tmp_path / "ckpt")


def test_storage_dtype_of_mixed_params_is_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.ones(2, ml_dtypes.bfloat16)
    assert _io.storage_dtype({"a": bf16, "b": bf16}) == "bfloat16"
    assert _io.storage_dtype({"a": bf16, "b": np.ones(2, np.float32)}) == "float32"
