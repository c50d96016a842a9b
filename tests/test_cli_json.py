"""``--json`` of the ``pi`` commands a script reads: valid JSON on stdout, in the documented shape;
and ``--progress`` draws bars on stderr that redirected output never gets."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core.checkpoints import load_checkpoint
from openpi_core.launch import DEMO_CHECKPOINT
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.transforms import load_norm_stats

aloha_plugin = pytest.importorskip("openpi_embodiment_aloha.plugin")


@pytest.fixture(autouse=True)
def aloha_only():
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("aloha", aloha_plugin)])):
        yield


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def test_configs_json():
    result = invoke("configs", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == sorted(rows)
    assert rows["pi0_aloha_sim"]["family"] == "pi0" and rows["pi0_aloha_sim"]["embodiment"] == "aloha"
    assert rows["pi0_aloha_sim"]["plugin"] == "aloha"
    assert rows["pi0_aloha_sim"]["checkpoint"].startswith("gs://openpi-assets/")
    assert set(rows["pi05_aloha"]) == {
        "name", "family", "embodiment", "description", "checkpoint", "norm_stats", "default_prompt", "plugin"
    }  # fmt: skip


def test_embodiments_show_json():
    result = invoke("embodiments", "show", "aloha", "--json", "--family", "pi05")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == "aloha" and shown["action_dim"] == 14 and shown["family"] == "pi05"
    assert shown["observation_schema"]["state"]["shape"] == [14]
    assert shown["observation_schema"]["images/cam_high"]["required"] is True
    assert shown["observation_schema"]["images/cam_left_wrist"]["required"] is False
    assert shown["transforms"]["inputs"] and shown["transforms"]["outputs"]


def test_convert_json_and_forced_progress(tmp_path):
    result = invoke("convert", DEMO_CHECKPOINT, tmp_path / "out", "--to", "native", "--json", "--progress")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    _, params = load_checkpoint(tmp_path / "out")
    assert written == {
        "src": str(DEMO_CHECKPOINT),
        "dst": str(tmp_path / "out"),
        "format": "native",
        "family": "pi0",
        "dtype": None,
        "tensors": len(params),
        "parameters": sum(int(np.prod(value.shape)) for value in params.values()),
    }
    assert "writing native: 100%" in result.stderr and f"{len(params)}/{len(params)}" in result.stderr
    assert "reading" in result.stderr


def test_convert_output_off_a_terminal_has_no_progress_bar(tmp_path):
    result = invoke("convert", DEMO_CHECKPOINT, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout.startswith("wrote pi0 weights")


@pytest.fixture
def dataset(tmp_path):
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    from openpi_core.data.testing import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path / "ds", episodes=2, frames_per_episode=6, image_size=(16, 16), fps=10)


def test_norm_stats_json(dataset, tmp_path):
    result = invoke(
        "norm-stats", "--config", "pi0_aloha_sim", "--dataset", dataset, "--out", tmp_path / "stats", "--json"
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    path = tmp_path / "stats" / "norm_stats.json"
    assert written["config"] == "pi0_aloha_sim" and written["path"] == str(path) and written["frames"] == 12
    assert set(written["norm_stats"]) == {"state", "actions"} and isinstance(written["warnings"], dict)
    np.testing.assert_allclose(written["norm_stats"]["state"]["mean"], load_norm_stats(path)["state"].mean)


def test_data_convert_json(tmp_path):
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        np.savez(
            raw / f"ep{index}.npz",
            **{"images/cam_high": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)},
            state=rng.normal(size=(4, 14)),
            actions=rng.normal(size=(4, 14)),
        )
    out = tmp_path / "lerobot"
    result = invoke(
        "data", "convert", "--format", "npz", raw, out, "--embodiment", "aloha", "--task", "wave", "--fps", 10, "--json"
    )
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["dataset"] == str(out) and written["version"] == "v3.0"
    assert (written["episodes"], written["frames"], written["fps"]) == (2, 8, 10)
    assert written["tasks"] == ["wave"] and len(written["cameras"]) == 1
