"""The native format: a bit-exact, atomic round trip of canonical weights and their config."""

import hashlib
import json
import re

import attrs
import numpy as np
import pytest

from openpi_core.checkpoints import _io, load_native, native, save_native
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
    del manifest["sha256"]  # edited by hand on purpose
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


# -- unreadable manifests, truncated and changed files ---------------------------------


def corrupt(file, how):
    data = bytearray(file.read_bytes())
    if how == "truncate":
        file.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip the bits of one byte in the middle (inside the tensor data)
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "text",
    [
        "half",  # truncated mid-document
        b"\xff\xfe not utf-8",
        "[1, 2]",
        lambda m: {**m, "config": "pi0"},
        lambda m: {**m, "format_version": "1"},
        lambda m: {**m, "dtype": 32},
        lambda m: {**m, "files": ["model.safetensors"]},
        lambda m: {**m, "files": {"model.safetensors": {"bytes": "12", "sha256": "00"}}},
        lambda m: {**m, "files": {"../../etc/passwd": {"bytes": 1, "sha256": "00"}}},
    ],
    ids=[
        "truncated",
        "not-utf8",
        "not-an-object",
        "config",
        "format_version",
        "dtype",
        "files",
        "files-entry",
        "files-outside",
    ],
)
def test_an_unreadable_manifest_is_an_error_naming_it_not_a_guessed_config(tmp_path, text):
    from openpi_core.checkpoints import load_checkpoint

    config = attrs.evolve(tiny_config(), action_horizon=2)
    save_native(tmp_path / "ckpt", config, random_params(config))
    file = tmp_path / "ckpt" / MANIFEST
    original = file.read_text()
    if text == "half":
        file.write_text(original[: len(original) // 2])
    elif isinstance(text, bytes):
        file.write_bytes(text)
    elif callable(text):
        file.write_text(json.dumps(text(json.loads(original))))
    else:
        file.write_text(text)
    # Read as "no manifest", the shapes would give a config with action_horizon 50.
    with pytest.raises(WeightsError, match=re.escape(str(file))):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(WeightsError, match=re.escape(str(file))):
        load_native(tmp_path / "ckpt")


def test_another_projects_manifest_is_still_ignored(tmp_path):
    from openpi_core.checkpoints import load_checkpoint

    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    (tmp_path / "ckpt" / MANIFEST).write_text(json.dumps({"format": "someone-else", "version": 3}))
    assert not is_native(tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt")[0].action_horizon == Pi0Config().action_horizon


def test_a_changed_byte_in_the_manifest_config_is_refused(tmp_path, monkeypatch):
    from openpi_core.checkpoints import load_checkpoint

    config = attrs.evolve(tiny_config(), action_horizon=50)
    save_native(tmp_path / "ckpt", config, random_params(config))
    file = tmp_path / "ckpt" / MANIFEST
    file.write_text(file.read_text().replace('"action_horizon": 50', '"action_horizon": 51'))
    with pytest.raises(WeightsError, match=rf"{re.escape(str(file))} has changed since it was written"):
        load_checkpoint(tmp_path / "ckpt")
    assert load_native(tmp_path / "ckpt", verify=False)[0].action_horizon == 51
    monkeypatch.setenv(_io.SKIP_CHECKSUMS_ENV, "1")
    assert load_checkpoint(tmp_path / "ckpt")[0].action_horizon == 51


def test_manifest_records_size_and_sha256_of_the_weights(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    weights = (tmp_path / "ckpt" / WEIGHTS).read_bytes()
    files = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())["files"]
    assert files == {WEIGHTS: {"bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}}


def test_flipped_bytes_in_the_weights_are_refused_naming_the_file(tmp_path, monkeypatch):
    from openpi_core.checkpoints import load_checkpoint

    config = tiny_config()
    params = random_params(config)
    save_native(tmp_path / "ckpt", config, params)
    corrupt(tmp_path / "ckpt" / WEIGHTS, "flip")
    weights = str(tmp_path / "ckpt" / WEIGHTS)
    with pytest.raises(WeightsError, match=rf"{re.escape(weights)} has changed since it was written: its sha256 is"):
        load_native(tmp_path / "ckpt")
    with pytest.raises(WeightsError, match=re.escape(weights)):
        load_checkpoint(tmp_path / "ckpt")
    # Skipping the hash (for very large files) loads the changed bytes as they are.
    _, loaded = load_native(tmp_path / "ckpt", verify=False)
    assert any(not np.array_equal(loaded[name], params[name], equal_nan=True) for name in params)
    load_checkpoint(tmp_path / "ckpt", verify=False)
    monkeypatch.setenv(_io.SKIP_CHECKSUMS_ENV, "1")
    load_native(tmp_path / "ckpt")
    load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(WeightsError, match="has changed"):
        load_native(tmp_path / "ckpt", verify=True)


def test_truncated_weights_are_refused_naming_the_file_even_without_hashing(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    corrupt(tmp_path / "ckpt" / WEIGHTS, "truncate")
    with pytest.raises(
        WeightsError, match=rf"{re.escape(str(tmp_path / 'ckpt' / WEIGHTS))} is \d+ bytes, but .*records \d+"
    ):
        load_native(tmp_path / "ckpt", verify=False)


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_damaged_safetensors_file_without_checksums_is_a_named_error(tmp_path, how):
    from openpi_core.checkpoints import load_checkpoint

    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    del manifest["files"], manifest["sha256"]  # as written before checksums were recorded
    (tmp_path / "ckpt" / MANIFEST).write_text(json.dumps(manifest))
    weights = tmp_path / "ckpt" / WEIGHTS
    if how == "truncate":
        corrupt(weights, "truncate")
    else:
        weights.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match=rf"{re.escape(str(weights))} is not a readable safetensors file"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    config = tiny_config()
    params = random_params(config)
    save_native(tmp_path / "ckpt", config, params)
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    del manifest["files"], manifest["sha256"]
    (tmp_path / "ckpt" / MANIFEST).write_text(json.dumps(manifest))
    loaded_config, loaded = load_native(tmp_path / "ckpt")
    assert loaded_config == config
    assert all(np.array_equal(loaded[name], params[name]) for name in params)


def test_a_file_the_manifest_lists_must_exist(tmp_path):
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    (tmp_path / "ckpt" / "norm_stats.json").write_text("{}")
    native.update_manifest_files(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "norm_stats.json").unlink()
    with pytest.raises(
        WeightsError, match=rf"{re.escape(str(tmp_path / 'ckpt' / 'norm_stats.json'))} is missing, but .*lists it"
    ):
        load_native(tmp_path / "ckpt")


def test_the_openpi_torch_export_records_and_checks_its_files(tmp_path):
    from openpi_core.checkpoints import load_checkpoint, save_checkpoint

    config = tiny_config()
    save_checkpoint(tmp_path / "torch", config, random_params(config), to="openpi-torch")
    assert set(json.loads((tmp_path / "torch" / MANIFEST).read_text())["files"]) == {WEIGHTS}
    corrupt(tmp_path / "torch" / WEIGHTS, "flip")
    with pytest.raises(WeightsError, match=rf"{re.escape(str(tmp_path / 'torch' / WEIGHTS))} has changed"):
        load_checkpoint(tmp_path / "torch")


def test_publishing_a_checkpoint_fsyncs_its_files_and_directories_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = _io.os.fsync, _io.os.replace

    def fsync(descriptor):
        events.append(("fsync", _io.os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", str(source), str(target)))
        real_replace(source, target)

    if not _io.os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name fsynced descriptors")
    monkeypatch.setattr(_io.os, "fsync", fsync)
    monkeypatch.setattr(_io.os, "replace", replace)
    config = tiny_config()
    save_native(tmp_path / "ckpt", config, random_params(config))
    publish = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(tmp_path / "ckpt"))
    scratch = events[publish][1]
    synced_before = {e[1] for e in events[:publish] if e[0] == "fsync"}
    assert {f"{scratch}/{WEIGHTS}", f"{scratch}/{MANIFEST}", scratch} <= synced_before
    assert ("fsync", str(tmp_path)) in events[publish:]
