"""``--json`` and ``--progress`` of ``pi run eval aloha-sim`` and ``pi data aloha-sim``, with the real simulator."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core.plugins import PluginManager
from openpi_core.serving import BackgroundServer, ServerConfig
from openpi_embodiment_aloha import plugin

os.environ.setdefault("MUJOCO_GL", "egl")
sim_env = pytest.importorskip("openpi_embodiment_aloha.sim.env", reason="needs the sim extra")
pytest.importorskip("openpi_embodiment_aloha.sim.evaluate")

STEPS = sim_env.EPISODE_STEPS["transfer-cube"]


@pytest.fixture(scope="module")
def pi():
    PluginManager(entry_points=False, plugins=[("aloha", plugin)]).add_commands(cli)
    return lambda *args: CliRunner().invoke(cli, [str(arg) for arg in args])


class HoldStill:
    """A served policy that answers ``[10, 14]`` chunks of the state."""

    metadata = {"name": "hold-still", "action_horizon": 10}

    def prepare(self, observation):
        return np.asarray(observation["state"], np.float32)

    def batch_key(self, prepared):
        return prepared.shape

    def run(self, prepared):
        return [{"actions": np.tile(state, (10, 1))} for state in prepared]


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(HoldStill(), ServerConfig(port=0, api_key=None)) as background:
        yield f"ws://127.0.0.1:{background.server.port}"


def test_eval_json_prints_the_results_and_progress_counts_steps(pi, server):
    result = pi("run", "eval", "aloha-sim", "--server", server, "--episodes", 1, "--seed", 2, "--json", "--progress")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["task"] == "transfer-cube" and data["success_rate"] == 0.0
    assert data["policy"]["server"] == server
    (episode,) = data["episodes"]
    assert episode["seed"] == 2 and episode["steps"] == STEPS and episode["success"] is False
    assert "aloha-sim transfer-cube" in result.stderr and "1/1" in result.stderr
    assert "steps of this episode" in result.stderr and f"/{STEPS}" in result.stderr


def test_eval_without_a_terminal_prints_no_bars_and_needs_out_or_json(pi, server, tmp_path):
    result = pi("run", "eval", "aloha-sim", "--server", server, "--episodes", 1, "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and "success rate: 0/1" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["episodes"][0]["steps"] == STEPS
    missing = pi("run", "eval", "aloha-sim", "--server", server)
    assert missing.exit_code == 2 and "--out FILE, or --json" in missing.output


def test_data_json_and_progress(pi, tmp_path):
    result = pi("data", "aloha-sim", "--episodes", 1, "--out", tmp_path / "ds", "--seed", 3, "--json", "--progress")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "dataset": str(tmp_path / "ds"),
        "task": "transfer-cube",
        "episodes": 1,
        "frames": STEPS,
        "seeds": [3],
        "discarded_seeds": [],
    }
    assert "recording transfer-cube" in result.stderr and "1/1" in result.stderr
