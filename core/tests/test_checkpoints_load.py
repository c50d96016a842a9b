"""load_checkpoint / save_checkpoint: format detection, the three namings, config inference, errors."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from openpi_core.checkpoints import (
    detect_format,
    detect_naming,
    infer_config,
    load_checkpoint,
    save_checkpoint,
    save_native,
)
from openpi_core.checkpoints.openpi_jax import openpi_jax_from_canonical
from openpi_core.checkpoints.openpi_torch import openpi_torch_from_canonical
from openpi_core.errors import UnknownNameError, WeightsError
from openpi_core.models.config import GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.plugins import PluginManager, use_plugin_manager


def tiny_config(pi05: bool = False) -> Pi0Config:
    gemma = GemmaConfig(width=16, depth=2, mlp_dim=24, num_heads=4, num_kv_heads=1, head_dim=8)
    vision = SiglipConfig(width=8, depth=2, mlp_dim=12, num_heads=2, image_size=(28, 28))
    return Pi0Config(llm=gemma, action_expert=gemma, vision=vision, vocab_size=32, pi05=pi05, dtype="float32")


def random_params(config: Pi0Config, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in pi0_weight_schema(config).items()}


@pytest.fixture(params=[False, True], ids=["pi0", "pi05"])
def case(request):
    config = tiny_config(request.param)
    return config, random_params(config)


def test_builtin_formats_are_registered_as_a_plugin():
    manager = PluginManager(entry_points=False)
    assert manager.registry("checkpoint_format").names() == ["native", "openpi-jax", "openpi-torch", "safetensors"]
    info = {i.name: i for i in manager.plugins()}["openpi_core.builtin_formats"]
    assert info.error is None and info.distribution == "openpi-core"
    assert sorted(info.registered["checkpoint_format"]) == ["native", "openpi-jax", "openpi-torch", "safetensors"]


def test_mappings_in_all_three_namings_load_alike(case):
    config, params = case
    jax_named = openpi_jax_from_canonical(params)
    torch_named = openpi_torch_from_canonical(params, config)
    assert (detect_naming(params), detect_naming(jax_named), detect_naming(torch_named)) == (
        "canonical",
        "openpi-jax",
        "openpi-torch",
    )
    for source, given in ((params, None), (jax_named, None), (torch_named, config)):
        loaded_config, loaded = load_checkpoint(source, given)
        assert loaded_config == config
        assert sorted(loaded) == sorted(params)
        assert all(np.array_equal(loaded[name], params[name]) for name in params)


def test_config_is_inferred_from_shapes(case):
    config, params = case
    assert infer_config(params) == config
    assert load_checkpoint(params)[0] == config


def test_mismatched_shape_names_the_parameter_and_both_shapes(case):
    config, params = case
    params = dict(params)
    params["vision.head.kernel"] = np.zeros((8, 15), np.float32)
    pattern = r"'vision\.head\.kernel' should have shape \[8, 16\], found \[8, 15\]"
    with pytest.raises(WeightsError, match=pattern):
        load_checkpoint(params, config)
    with pytest.raises(WeightsError, match=pattern):
        load_checkpoint(openpi_jax_from_canonical(params), config)


def test_unknown_names_are_reported(case):
    _, params = case
    with pytest.raises(WeightsError, match=r"unknown to π0/π0\.5: \['PaliGemma/llm/extra'\]"):
        load_checkpoint({**openpi_jax_from_canonical(params), "PaliGemma/llm/extra": np.zeros(2)})
    with pytest.raises(WeightsError, match=r"unexpected parameters \['llm\.extra'\]"):
        load_checkpoint({**params, "llm.extra": np.zeros(2)})


def test_each_format_is_detected_and_read(case, tmp_path):
    config, params = case
    save_native(tmp_path / "native", config, params)
    save_checkpoint(tmp_path / "torch", config, params, to="openpi-torch")
    save_file(openpi_jax_from_canonical(params), str(tmp_path / "bare.safetensors"))
    expected = {
        tmp_path / "native": "native",
        tmp_path / "native" / "model.safetensors": "safetensors",
        tmp_path / "torch": "openpi-torch",
        tmp_path / "torch" / "model.safetensors": "openpi-torch",
        tmp_path / "bare.safetensors": "safetensors",
    }
    for path, name in expected.items():
        assert detect_format(path).name == name, path
        loaded_config, loaded = load_checkpoint(path)
        assert loaded_config == config, path
        assert all(np.array_equal(loaded[n], params[n]) for n in params), path


def test_unrecognised_or_missing_paths_are_clear_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(WeightsError, match="recognised by: none of them"):
        load_checkpoint(tmp_path)
    with pytest.raises(WeightsError, match="no such file or directory"):
        load_checkpoint(tmp_path / "absent")


def test_save_checkpoint_to_an_unknown_format(case, tmp_path):
    config, params = case
    with pytest.raises(UnknownNameError, match="'openpi-tf'"):
        save_checkpoint(tmp_path / "x", config, params, to="openpi-tf")


def test_the_safetensors_format_is_read_only(case, tmp_path):
    config, params = case
    with pytest.raises(NotImplementedError, match="cannot be written"):
        save_checkpoint(tmp_path / "x", config, params, to="safetensors")


def test_a_file_url_is_fetched_into_the_cache(case, tmp_path, monkeypatch):
    config, params = case
    save_checkpoint(tmp_path / "ckpt", config, params)
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    loaded_config, loaded = load_checkpoint((tmp_path / "ckpt").as_uri())
    assert loaded_config == config
    assert all(np.array_equal(loaded[n], params[n]) for n in params)
    assert any((tmp_path / "cache").rglob("model.safetensors"))


def test_a_plugin_format_takes_part_in_detection(case, tmp_path):
    config, params = case
    from openpi_core import hookimpl
    from openpi_core.specs import AbstractCheckpointFormat

    class Npz(AbstractCheckpointFormat):
        name = "npz"

        def detect(self, path):
            return path.suffix == ".npz"

        def read(self, path, config=None, *, progress=None):
            with np.load(path) as data:
                return load_checkpoint({k.replace(":", "."): data[k] for k in data.files}, config)

    class Plugin:
        @hookimpl
        def openpi_register_checkpoint_formats(self, register):
            register(Npz())

    np.savez(tmp_path / "w.npz", **{name.replace(".", ":"): array for name, array in params.items()})
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("npz", Plugin())])):
        assert load_checkpoint(tmp_path / "w.npz")[0] == config
