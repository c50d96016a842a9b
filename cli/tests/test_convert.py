"""``pi convert``, invoked directly with click's CliRunner on the reference weights."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from openpi_cli.convert import convert
from openpi_core.checkpoints import load_checkpoint
from openpi_core.checkpoints.openpi_torch import UNUSED_EXPERT_HEAD
from openpi_core.reference import load_reference
from openpi_core.serialization import unstructure


@pytest.fixture
def ref(reference_root):
    return load_reference(reference_root / "pi05")


def run(*args: str):
    return CliRunner().invoke(convert, [str(a) for a in args], catch_exceptions=False)


def test_convert_openpi_jax_safetensors_to_native(ref, tmp_path):
    result = run(ref.openpi_params_path, tmp_path / "native")
    assert result.exit_code == 0, result.output
    assert "wrote pi05 weights (51 tensors" in result.output and "as native" in result.output
    config, params = load_checkpoint(tmp_path / "native")
    _, expected = load_checkpoint(ref.openpi_params_path)
    assert config.pi05 and all(np.array_equal(params[n], expected[n]) for n in expected)


def test_convert_orbax_to_openpi_torch_matches_openpi(ref, tmp_path):
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(unstructure(ref.config)))
    result = run(ref.orbax_params_path, tmp_path / "torch", "--to", "openpi-torch", "--config-json", config_json)
    assert result.exit_code == 0, result.output
    written = load_file(str(tmp_path / "torch" / "model.safetensors"))
    expected = load_file(str(ref.torch_state_path))
    assert sorted(written) == sorted(expected)
    assert all(np.array_equal(written[k], expected[k]) for k in expected if k != UNUSED_EXPERT_HEAD)
    assert load_checkpoint(tmp_path / "torch")[0] == ref.config


def test_convert_torch_needs_a_config_for_the_tiny_vision_tower(ref, tmp_path):
    result = run(ref.torch_state_path, tmp_path / "out")
    assert result.exit_code == 1
    assert "Error: cannot infer the number of SigLIP attention heads" in result.output
    assert not (tmp_path / "out").exists()


def test_mismatched_config_names_the_parameter(ref, tmp_path):
    data = unstructure(ref.config)
    data["vocab_size"] = 1000
    (tmp_path / "config.json").write_text(json.dumps(data))
    result = run(ref.openpi_params_path, tmp_path / "out", "--config-json", tmp_path / "config.json")
    assert result.exit_code == 1
    assert "'llm.embedding' should have shape [1000, 64], found [1024, 64]" in result.output


def test_existing_destination_needs_overwrite(ref, tmp_path):
    (tmp_path / "out").mkdir()
    result = run(ref.openpi_params_path, tmp_path / "out")
    assert result.exit_code == 1 and "already exists" in result.output
    result = run(ref.openpi_params_path, tmp_path / "out", "--overwrite", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["dtype"] == "bfloat16"


def test_unknown_format_and_bad_config_file(ref, tmp_path):
    result = run(ref.openpi_params_path, tmp_path / "out", "--to", "openpi-tf")
    assert result.exit_code == 1 and "no checkpoint_format named 'openpi-tf'" in result.output
    (tmp_path / "bad.json").write_text("{not json")
    result = run(ref.openpi_params_path, tmp_path / "out", "--config-json", tmp_path / "bad.json")
    assert result.exit_code == 1 and "cannot read the config JSON" in result.output
