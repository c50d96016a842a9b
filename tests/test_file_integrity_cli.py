"""Damaged checkpoint, training-state, tokenizer and dataset files through ``pi``: one
``Error: ...`` line that names the file, never a traceback; a torn metrics line is survived."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import openpi_core.training.testing
from openpi_cli.main import cli
from openpi_core.checkpoints import save_native
from openpi_core.data.testing import make_synthetic_dataset
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.training import checkpoint as ckpt
from openpi_core.training.loop import read_metrics

aloha = pytest.importorskip("openpi_embodiment_aloha.plugin")
pytest.importorskip("pyarrow")
pytest.importorskip("av")

TINY = openpi_core.training.testing.tiny_pi0_config(action_horizon=2)


@pytest.fixture(autouse=True)
def plugins():
    manager = PluginManager(entry_points=False, plugins=[("aloha", aloha), ("linear", openpi_core.training.testing)])
    with use_plugin_manager(manager):
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return openpi_core.training.testing.write_training_files(
        tmp_path_factory.mktemp("integrity"),
        TINY,
        ["pick up the cube", "fold the towel", "0 1 2 3"],
        vocab_size=24,
        episodes=2,
        frames_per_episode=6,
    )


def one_error_line(result, *fragments):
    """The run failed with click's one ``Error:`` line holding every fragment, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def serve(checkpoint):
    args = ["run", "serve", "--checkpoint", str(checkpoint), "--embodiment", "aloha", "--backend", "linear"]
    return CliRunner().invoke(cli, args)


def native_checkpoint(path):
    rng = np.random.default_rng(0)
    params = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in pi0_weight_schema(TINY).items()}
    return save_native(path, TINY, params)


def test_serve_refuses_a_truncated_manifest_naming_it(tmp_path):
    checkpoint = native_checkpoint(tmp_path / "ckpt")
    manifest = checkpoint / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    one_error_line(serve(checkpoint), "WeightsError", str(manifest), "not valid JSON")


def test_serve_refuses_changed_weights_naming_the_file(tmp_path):
    checkpoint = native_checkpoint(tmp_path / "ckpt")
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    one_error_line(serve(checkpoint), str(weights), "has changed since it was written")


def test_serve_refuses_truncated_weights_of_an_older_checkpoint_naming_the_file(tmp_path):
    checkpoint = native_checkpoint(tmp_path / "ckpt")
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    del manifest["files"], manifest["sha256"]  # written before checksums were recorded
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    one_error_line(serve(checkpoint), str(weights), "not a readable safetensors file")


def train(files, base, dataset, *extra):
    args = ["run", "train", "--config", "pi0_aloha_sim", "--model-config", str(files / "tiny.json")]
    args += [
        "--backend",
        "linear",
        "--exp-name",
        "t",
        "--dataset",
        str(dataset),
        "--tokenizer",
        str(files / "tok.model"),
    ]
    for setting in ("num_workers=0", "batch_size=4", "lr_schedule.warmup_steps=1", "log_interval=1", "save_interval=2"):
        args += ["--set", setting]
    return CliRunner().invoke(cli, [*args, "--set", f"checkpoint_base_dir={base}", *extra])


def test_train_resume_refuses_changed_train_state_naming_the_file(files, tmp_path):
    assert train(files, tmp_path, files / "dataset", "--set", "num_train_steps=2").exit_code == 0
    arrays = tmp_path / "pi0_aloha_sim" / "t" / "2" / ckpt.TRAIN_STATE_WEIGHTS
    data = bytearray(arrays.read_bytes())
    data[-8] ^= 0x01
    arrays.write_bytes(bytes(data))
    result = train(files, tmp_path, files / "dataset", "--set", "num_train_steps=4", "--resume")
    one_error_line(result, str(arrays), "has changed since it was written")


def test_train_resume_survives_a_torn_last_metrics_line(files, tmp_path):
    assert train(files, tmp_path, files / "dataset", "--set", "num_train_steps=2").exit_code == 0
    exp_dir = tmp_path / "pi0_aloha_sim" / "t"
    with (exp_dir / "metrics.jsonl").open("a") as file:
        file.write('{"step": 3, "loss": 0.')
    result = train(files, tmp_path, files / "dataset", "--set", "num_train_steps=4", "--resume")
    assert result.exit_code == 0, result.output
    assert [line["step"] for line in read_metrics(exp_dir)] == [1, 2, 3, 4]


def test_train_refuses_a_truncated_data_file_naming_it(files, tmp_path):
    dataset = make_synthetic_dataset(
        tmp_path / "dataset", episodes=2, frames_per_episode=6, image_size=(16, 16), fps=10
    )
    data = dataset / "data" / "chunk-000" / "file-000.parquet"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    result = train(files, tmp_path, dataset, "--set", "num_train_steps=2")
    one_error_line(result, str(data), "truncated or corrupt")


def test_train_refuses_a_damaged_tokenizer_naming_it(files, tmp_path):
    broken = tmp_path / "tok.model"
    broken.write_bytes((files / "tok.model").read_bytes()[:100])
    args = ["run", "train", "--config", "pi0_aloha_sim", "--model-config", str(files / "tiny.json")]
    args += ["--backend", "linear", "--exp-name", "t", "--dataset", str(files / "dataset"), "--tokenizer", str(broken)]
    args += ["--set", "num_workers=0", "--set", "batch_size=4", "--set", "num_train_steps=1"]
    result = CliRunner().invoke(cli, [*args, "--set", f"checkpoint_base_dir={tmp_path}"])
    one_error_line(result, str(broken), "not a valid SentencePiece tokenizer model")
