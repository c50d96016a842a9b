"""``pi data convert`` and ``pi norm-stats`` on tiny datasets, with a test robot registered as a plugin."""

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from openpi_cli.data import data
from openpi_cli.norm_stats import norm_stats
from openpi_core import hookimpl
from openpi_core.data import LeRobotDataset
from openpi_core.data.testing import make_synthetic_dataset
from openpi_core.models.config import Pi0Config
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.schema import ArraySpec
from openpi_core.specs import AbstractEmbodiment, NamedConfig
from openpi_core.transforms import Group, RepackTransform, load_norm_stats

HORIZON = 3


class Arm(AbstractEmbodiment):
    """Robot keys ``images/cam_high``, ``state`` [4], ``actions``; the ALOHA-sim LeRobot names."""

    name = "arm"
    description = "test arm"
    action_dim = 4
    observation_schema = {
        "images/cam_high": ArraySpec((None, None, 3), "u"),
        "state": ArraySpec((4,)),
        "actions": ArraySpec((None, 4), required=False),
    }

    def transforms(self, model_family):
        return Group()

    def repack_transforms(self):
        structure = {
            "images": {"cam_high": "observation.images.top"},
            "state": "observation.state",
            "actions": "action",
        }
        return Group(inputs=[RepackTransform(structure)])

    def example(self, seed=0):
        return {}


class ArmPlugin:
    @hookimpl
    def openpi_register_embodiments(self, register):
        register(Arm())

    @hookimpl
    def openpi_register_configs(self, register):
        register(NamedConfig("pi0_arm", "pi0", Pi0Config(action_horizon=HORIZON), "arm"))
        register(
            NamedConfig(
                "pi0_arm_published",
                "pi0",
                Pi0Config(action_horizon=HORIZON),
                "arm",
                checkpoint="gs://bucket/checkpoints/pi0_arm",
                norm_stats="gs://bucket/checkpoints/pi0_arm/assets/lab/arm_data",
            )
        )


@pytest.fixture(autouse=True)
def arm_plugin():
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("arm", ArmPlugin())])):
        yield


def invoke(command, *args):
    return CliRunner().invoke(command, [str(arg) for arg in args], catch_exceptions=False)


def test_commands_are_registered():
    from openpi_cli.main import cli

    assert cli.commands["norm-stats"] is norm_stats and cli.commands["data"] is data


def test_norm_stats_match_numpy_and_load_back(tmp_path, monkeypatch):
    root = make_synthetic_dataset(
        tmp_path / "arm_data",
        episodes=2,
        frames_per_episode=[6, 5],
        image_size=(8, 8),
        state_dim=4,
        action_dim=4,
        fps=10,
    )
    monkeypatch.chdir(tmp_path)
    result = invoke(norm_stats, "--config", "pi0_arm", "--dataset", root)
    assert result.exit_code == 0, result.output
    path = tmp_path / "assets" / "pi0_arm" / "arm_data" / "norm_stats.json"
    assert f"over 11 frames to {path.relative_to(tmp_path)}" in result.output

    stats = load_norm_stats(path)
    ds = LeRobotDataset(root, action_horizon=HORIZON)
    states = np.stack([ds[i]["observation.state"] for i in range(len(ds))]).astype(np.float64)
    actions = np.concatenate([ds[i]["action"] for i in range(len(ds))]).astype(np.float64)
    np.testing.assert_allclose(stats["state"].mean, states.mean(0), atol=1e-9)
    np.testing.assert_allclose(stats["state"].std, states.std(0), atol=1e-9)
    np.testing.assert_allclose(stats["actions"].mean, actions.mean(0), atol=1e-9)
    np.testing.assert_allclose(stats["actions"].std, actions.std(0), atol=1e-9)
    assert stats["state"].q01 is not None and stats["actions"].q99.shape == (4,)

    published = invoke(norm_stats, "--config", "pi0_arm_published", "--dataset", root, "--max-frames", 5)
    assert published.exit_code == 0, published.output
    assert "over 5 frames" in published.output
    assert (tmp_path / "assets" / "pi0_arm_published" / "lab" / "arm_data" / "norm_stats.json").is_file()


def test_convert_npz_then_norm_stats_warns_about_a_constant_dim(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        state = rng.normal(size=(5, 4))
        state[:, 1] = 0.5  # a joint that never moves
        np.savez(
            raw / f"ep{index}.npz",
            **{"images/cam_high": rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), "state": state},
            actions=rng.normal(size=(5, 4)),
        )
    out = tmp_path / "lerobot"
    result = invoke(data, "convert", "--format", "npz", raw, out, "--embodiment", "arm", "--task", "wave", "--fps", 10)
    assert result.exit_code == 0, result.output
    assert "wrote 2 episodes (10 frames at 10 fps, 1 tasks) as LeRobot v3.0" in result.output
    assert LeRobotDataset(out)[7]["task"] == "wave"

    again = invoke(data, "convert", "--format", "npz", raw, out, "--embodiment", "arm", "--fps", 10)
    assert again.exit_code == 1 and "already exists" in again.output

    stats_dir = tmp_path / "stats"
    result = CliRunner().invoke(
        norm_stats, ["--config", "pi0_arm", "--dataset", str(out), "--out", str(stats_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "norm stats 'state': near-zero width" in result.stderr and "dim 1 (std 0" in result.stderr
    assert "'actions'" not in result.stderr
    assert load_norm_stats(stats_dir)["state"].std[1] == 0


def test_unknown_config_and_missing_task_are_errors(tmp_path):
    root = make_synthetic_dataset(
        tmp_path / "ds", episodes=1, frames_per_episode=3, image_size=(8, 8), state_dim=4, action_dim=4
    )
    result = invoke(norm_stats, "--config", "pi0_nope", "--dataset", root)
    assert result.exit_code == 1 and "no config named 'pi0_nope'" in result.output
    raw = tmp_path / "raw"
    raw.mkdir()
    np.savez(
        raw / "ep.npz",
        **{"images/cam_high": np.zeros((2, 8, 8, 3), np.uint8), "state": np.zeros((2, 4))},
        actions=np.zeros((2, 4)),
    )
    result = invoke(data, "convert", "--format", "npz", raw, tmp_path / "out", "--embodiment", "arm", "--fps", 10)
    assert result.exit_code == 1 and "ep.npz: no task" in result.output
