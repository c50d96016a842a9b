"""The ALOHA simulator's evaluation runner, dataset recorder and their ``pi`` commands, with the real simulator."""

import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core.data.lerobot import LeRobotDataset, import_av
from openpi_core.errors import InputError
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.serving import BackgroundServer, ServerConfig
from openpi_core.transforms import compose
from openpi_embodiment_aloha import AlohaEmbodiment, plugin
from openpi_embodiment_aloha.sim import cli as sim_cli

os.environ.setdefault("MUJOCO_GL", "egl")
sim_env = pytest.importorskip("openpi_embodiment_aloha.sim.env", reason="needs the sim extra")
sim_evaluate = pytest.importorskip("openpi_embodiment_aloha.sim.evaluate")
sim_expert = pytest.importorskip("openpi_embodiment_aloha.sim.expert")
sim_record = pytest.importorskip("openpi_embodiment_aloha.sim.record")

STEPS = sim_env.EPISODE_STEPS["transfer-cube"]


def expand(runs):
    """A reward sequence from (reward, repeats) runs."""
    return [float(reward) for reward, count in runs for _ in range(count)]


# The scripted expert's transfer-cube rewards for seed 0: 4 fires for 2 steps when the open
# left gripper first touches the cube the right one holds, drops to 2, then holds to the end.
EXPERT_SEED_0 = expand([(0, 91), (1, 1), (0, 1), (1, 1), (2, 95), (4, 2), (2, 1), (4, 108)])


@pytest.mark.parametrize(
    ("rewards", "success"),
    [
        ([0, 1, 2, 3, 4, 4, 3], False),
        ([0, 1, 2, 3, 4, 4], True),
        (EXPERT_SEED_0, True),
        (EXPERT_SEED_0[: 91 + 1 + 1 + 1 + 95 + 2 + 1], False),  # ended just after the transient 4
        ([0.0] * STEPS, False),
        ([], False),
    ],
)
def test_episode_success_needs_the_top_reward_at_the_end(rewards, success):
    assert sim_evaluate.episode_success(rewards) is success


def test_cli_tasks_and_fps_match_the_simulator():
    assert sim_cli.TASKS == sim_env.TASKS
    assert sim_evaluate.FPS == 50


def test_broker_replays_replan_steps_actions_per_inference(monkeypatch):
    env = sim_env.AlohaSimEnv("transfer-cube", render="none")
    rest = env.reset(0)["state"].astype(np.float32)
    applied, calls, resets = [], [], []
    step = env.step

    def recording_step(action):
        applied.append(np.array(action))
        return step(action)

    def policy_fn(observation):
        assert observation["prompt"] == "Transfer cube" and observation["state"].shape == (14,)
        chunk = np.tile(rest, (8, 1))
        chunk[:, 0] = 1e-3 * (10 * len(calls) + np.arange(8))  # waist target encodes (call, row)
        calls.append(observation)
        return chunk

    monkeypatch.setattr(env, "step", recording_step)
    results = sim_evaluate.evaluate(
        policy_fn, env, episodes=2, seed=0, replan_steps=3, on_reset=lambda: resets.append(len(calls))
    )
    per_episode = -(-STEPS // 3)
    assert [episode.inferences for episode in results.episodes] == [per_episode, per_episode]
    assert len(calls) == 2 * per_episode and resets == [0, per_episode]
    call, row = np.divmod(np.rint([action[0] * 1e3 for action in applied]).astype(int), 10)
    t = np.arange(2 * STEPS) % STEPS
    np.testing.assert_array_equal(row, t % 3)
    np.testing.assert_array_equal(call, np.repeat(np.arange(2), STEPS) * per_episode + t // 3)


def test_evaluate_refuses_a_chunk_shorter_than_replan_steps():
    env = sim_env.AlohaSimEnv("transfer-cube", render="none")
    with pytest.raises(InputError, match=r"\[H >= replan_steps=3, 14\], got shape \[2, 14\]"):
        sim_evaluate.evaluate(lambda observation: np.zeros((2, 14)), env, episodes=1, replan_steps=3)


def test_evaluate_scores_the_scripted_expert_and_writes_results_and_videos(tmp_path):
    env = sim_env.AlohaSimEnv("transfer-cube", render="fast")
    expert = sim_expert.ScriptedExpert(env)
    seen = []
    results = sim_evaluate.evaluate(
        lambda observation: expert.act(observation)[None],
        env,
        episodes=2,
        seed=0,
        replan_steps=1,
        video_dir=tmp_path / "videos",
        progress=seen.append,
        on_reset=expert.reset,
        policy_info={"name": "scripted expert"},
    )
    assert seen == list(results.episodes)
    assert results.success_rate == 1.0
    data = json.loads(results.write(tmp_path / "out" / "results.json").read_text())
    assert data["task"] == "transfer-cube" and data["prompt"] == "Transfer cube"
    assert data["render"] == "fast" and data["image_size"] == [224, 224] and data["replan_steps"] == 1
    assert data["success_rate"] == 1.0 and data["policy"] == {"name": "scripted expert"}
    assert data["mean_latency_ms"] > 0
    assert [episode["seed"] for episode in data["episodes"]] == [0, 1]
    for episode in data["episodes"]:
        assert episode["success"] and episode["final_reward"] == episode["max_reward"] == 4.0
        assert episode["steps"] == episode["inferences"] == STEPS
        with import_av().open(episode["video"]) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == STEPS and frames[0].shape == (224, 224, 3)


def test_evaluate_scores_the_scripted_expert_on_insertion_without_images():
    env = sim_env.AlohaSimEnv("insertion", render="none")
    expert = sim_expert.ScriptedExpert(env)
    results = sim_evaluate.evaluate(
        lambda observation: expert.act(observation)[None], env, episodes=1, replan_steps=1, on_reset=expert.reset
    )
    assert results.prompt == sim_env.PROMPTS["insertion"] and results.image_size is None
    assert results.success_rate == 1.0


def test_record_dataset_keeps_successes_only_and_trains_as_aloha(tmp_path, monkeypatch):
    outcomes = iter([False, True, True])  # seed 0 "fails": it is discarded and seed 2 drawn
    monkeypatch.setattr(sim_record, "episode_success", lambda rewards: next(outcomes))
    tried = []
    recording = sim_record.record_dataset(
        "transfer-cube", 2, tmp_path / "ds", seed=0, progress=lambda s, kept: tried.append((s, kept))
    )
    assert tried == [(0, False), (1, True), (2, True)]
    assert recording.seeds == (1, 2) and recording.discarded_seeds == (0,) and recording.frames == 2 * STEPS

    dataset = LeRobotDataset(tmp_path / "ds", action_horizon=10)
    assert dataset.version == "v3.0" and dataset.fps == 50
    assert dataset.num_episodes == 2 and len(dataset) == 2 * STEPS
    assert dataset.camera_keys == ("observation.images.top",)
    sample = dataset[STEPS + 5]
    assert sample["task"] == "Transfer cube"
    assert sample["observation.images.top"].shape == (224, 224, 3)
    assert sample["observation.state"].shape == (14,) and sample["action"].shape == (10, 14)
    # What `pi run train --embodiment aloha` does first: the embodiment's repack, then its inputs.
    robot = AlohaEmbodiment(default_prompt="Transfer cube")
    transforms = compose([*robot.repack_transforms().inputs, *robot.transforms("pi0").inputs])
    model_inputs = transforms(sample)
    assert model_inputs["image"]["base_0_rgb"].shape == (224, 224, 3) and model_inputs["actions"].shape == (10, 14)

    with pytest.raises(InputError, match="already exists"):
        sim_record.record_dataset("transfer-cube", 1, tmp_path / "ds")


# --- the pi commands --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pi():
    """``pi`` with the aloha plugin's commands, run through CliRunner."""
    PluginManager(entry_points=False, plugins=[("aloha", plugin)]).add_commands(cli)
    return lambda *args: CliRunner().invoke(cli, [str(arg) for arg in args])


def test_pi_data_aloha_sim_records_a_dataset_that_pi_run_train_reads(pi, tmp_path):
    result = pi("data", "aloha-sim", "--episodes", 1, "--out", tmp_path / "ds", "--seed", 3)
    assert result.exit_code == 0, result.output
    assert f"wrote 1 episodes ({STEPS} frames) of transfer-cube" in result.output
    assert "discarded 0 failed seeds" in result.output
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 1

    jax_plugin = pytest.importorskip("openpi_backend_jax.plugin")
    manager = PluginManager(entry_points=False, plugins=[("aloha", plugin), ("jax", jax_plugin)])
    settings = {"batch_size": 2, "num_train_steps": 2, "num_workers": 0, "checkpoint_base_dir": tmp_path / "ckpt"}
    with use_plugin_manager(manager):
        result = pi(
            "run", "train", "--config", "pi0_aloha_sim_small", "--backend", "jax", "--dataset", tmp_path / "ds",
            "--exp-name", "smoke", *(f"--set={key}={value}" for key, value in settings.items()),
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = tmp_path / "ckpt" / "pi0_aloha_sim_small" / "smoke" / "2" / "model"
    assert (model / "model.safetensors").is_file() and (model / "assets" / "tokenizer.model").is_file()


def test_pi_commands_name_the_sim_extra_when_it_is_missing(pi, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openpi_embodiment_aloha.sim.record", None)
    result = pi("data", "aloha-sim", "--out", tmp_path / "ds")
    assert result.exit_code != 0 and 'pip install "openpi-embodiment-aloha[sim]"' in result.output


class HoldStill:
    """A served policy that validates ALOHA observations and answers ``[10, 14]`` chunks of the state."""

    metadata = {"name": "hold-still", "action_horizon": 10}

    def prepare(self, observation):
        AlohaEmbodiment().validate(observation)
        assert observation["images"]["cam_high"].shape == (224, 224, 3) and observation["prompt"] == "Transfer cube"
        return np.asarray(observation["state"], np.float32)

    def batch_key(self, prepared):
        return prepared.shape

    def run(self, prepared):
        return [{"actions": np.tile(state, (10, 1))} for state in prepared]


def test_pi_run_eval_aloha_sim_against_a_server(pi, tmp_path):
    with BackgroundServer(HoldStill(), ServerConfig(port=0, api_key=None)) as background:
        url = f"ws://127.0.0.1:{background.server.port}"
        result = pi(
            "run", "eval", "aloha-sim", "--server", url, "--episodes", 1, "--seed", 5, "--out", tmp_path / "r.json"
        )
    assert result.exit_code == 0, result.output
    assert "success rate: 0/1 (0%) on transfer-cube" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["policy"] == {"server": url, "name": "hold-still", "action_horizon": 10}
    assert data["render"] == "fast" and data["image_size"] == [224, 224] and data["success_rate"] == 0.0
    (episode,) = data["episodes"]
    assert episode["seed"] == 5 and episode["steps"] == STEPS and episode["inferences"] == STEPS // 10
    assert episode["success"] is False and episode["video"] is None


def test_pi_run_eval_aloha_sim_in_process(pi, tmp_path):
    jax_plugin = pytest.importorskip("openpi_backend_jax.plugin")
    from openpi_core.launch import DEMO_CHECKPOINT

    manager = PluginManager(entry_points=False, plugins=[("aloha", plugin), ("jax", jax_plugin)])
    with use_plugin_manager(manager):
        result = pi(
            "run", "eval", "aloha-sim", "--checkpoint", DEMO_CHECKPOINT, "--backend", "jax", "--episodes", 1,
            "--num-steps", 2, "--out", tmp_path / "r.json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["policy"]["backend"] == "jax" and data["policy"]["checkpoint"] == str(DEMO_CHECKPOINT)
    assert data["episodes"][0]["inferences"] == STEPS // 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say which policy"),
        (
            ["--server", "ws://127.0.0.1:1", "--config", "pi0_aloha_sim"],
            "--server evaluates a served policy; drop --config",
        ),
        (["--server", "ws://127.0.0.1:1", "--num-steps", "5"], "--server evaluates a served policy; drop --num-steps"),
    ],
)
def test_pi_run_eval_aloha_sim_usage_errors(pi, tmp_path, args, message):
    result = pi("run", "eval", "aloha-sim", "--out", tmp_path / "r.json", *args)
    assert result.exit_code == 2 and message in result.output
