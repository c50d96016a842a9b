"""Data → ``pi run train`` → checkpoint → served policy, for a tiny π0-FAST in each backend.

Every episode of the synthetic LeRobot dataset belongs to one of two classes, told
apart by the sign of state dimension 0; the other state dimensions are noise, and the
action is one constant vector per class. A policy that learned the task must, for a
state it never saw, decode exactly the FAST tokens of its class's training chunk and
serve that class's actions.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core.client.websocket_client import WebsocketClientPolicy
from openpi_core.data.writer import LeRobotWriter
from openpi_core.fast import FASTActionTokenizer
from openpi_core.fast.testing import fast_skip_tokens, train_fast_test_tokenizer
from openpi_core.models.config import GEMMA_VARIANTS, Pi0FASTConfig, SiglipConfig
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.serialization import unstructure
from openpi_core.serving.server import BackgroundServer, ServerConfig
from openpi_core.training.loop import read_metrics
from openpi_core.transforms import load_norm_stats

pytest.importorskip("tokenizers")

STEPS = 400
LOSS_DROP = 5.0
TASK = "do the fast task"
DIM, HORIZON, IMAGE = 14, 4, (28, 28)
LOCS = 320
SCALE = 10.0
"""The FAST tokenizer's DCT scale (openpi's)."""
STATE_BINS = [str(value) for value in range(256)]
CORPUS = [TASK, f"Task: {TASK}, State: 0 12 255 128;\nAction: |"] * 40
CLASS_STATE = (-0.6, 0.6)
"""State dimension 0 of each class; the policy must read it from the binned state."""
ACTIONS = np.random.default_rng(7).uniform(-0.8, 0.8, (2, DIM)).astype(np.float32)
"""The action of each class, at every frame."""


FRAMES = 12
"""Frames per episode; episode ``e`` is of class ``e % 2``."""


def write_dataset(root, episodes: int = 8, frames: int = FRAMES) -> None:
    features = {
        "observation.images.top": {"dtype": "video", "shape": [*IMAGE, 3]},
        "observation.state": {"dtype": "float32", "shape": [DIM]},
        "action": {"dtype": "float32", "shape": [DIM]},
    }
    with LeRobotWriter(root, fps=10, features=features, robot_type="synthetic") as writer:
        for episode in range(episodes):
            label = episode % 2
            writer.add_episode(
                {
                    "observation.images.top": np.full((frames, *IMAGE, 3), 90 + 60 * label, np.uint8),
                    "observation.state": random_states(frames, label, seed=episode),
                    "action": np.repeat(ACTIONS[label][None], frames, axis=0),
                },
                task=TASK,
            )


def random_states(count: int, label: int, seed: int) -> np.ndarray:
    states = np.random.default_rng([seed, 11]).uniform(-1.0, 1.0, (count, DIM)).astype(np.float32)
    states[:, 0] = CLASS_STATE[label]
    return states


def tiny_fast_model(vocab_size: int, skip: int) -> Pi0FASTConfig:
    return Pi0FASTConfig(
        llm=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2, image_size=IMAGE),
        vocab_size=vocab_size,
        action_dim=DIM,
        action_horizon=HORIZON,
        max_token_len=96,
        max_decoding_steps=48,
        fast_skip_tokens=skip,
        decode_position_offset=0,  # decode where training put the tokens (openpi's 1 is off by one)
        dtype="float32",
        image_keys=("base_0_rgb",),  # the simulated ALOHA's one camera
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_e2e")
    write_dataset(root / "dataset")
    model_file = train_fast_test_tokenizer(root / "spm", CORPUS, locs=LOCS, symbols=STATE_BINS)
    t = np.linspace(0.0, 1.0, HORIZON)[None, :, None]
    rng = np.random.default_rng(0)
    # Wider than the normalized [-1, 1]: coefficients below the fitted min_token would be clipped.
    chunks = 1.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0, (200, 1, DIM)) * t + rng.uniform(0, 6, (200, 1, DIM)))
    action_tokenizer = FASTActionTokenizer.fit(
        list(chunks), vocab_size=300, scale=SCALE, time_horizon=HORIZON, action_dim=DIM
    )
    action_tokenizer.save(root / "fast")
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(model_file)).vocab_size()
    config = {"family": "pi0_fast", **unstructure(tiny_fast_model(vocab, fast_skip_tokens(model_file, LOCS)))}
    (root / "model.json").write_text(json.dumps(config))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_tiny_fast_policy_decodes_its_training_tokens_on_new_states_and_serves_them(files, tmp_path, backend):
    from openpi_core.policy import create_policy

    aloha = pytest.importorskip("openpi_embodiment_aloha.plugin")
    plugin = pytest.importorskip(f"openpi_backend_{backend}.plugin")
    settings = {
        "checkpoint_base_dir": str(tmp_path),
        "num_workers": 0,
        "batch_size": 8,
        "num_train_steps": STEPS,
        "save_interval": STEPS,
        "log_interval": 20,
        "ema_decay": None,
        "augment": False,
        "precision": "float32",
        "lr_schedule.warmup_steps": 20,
        "lr_schedule.peak_lr": 3e-3,
        "lr_schedule.decay_steps": STEPS,
        "lr_schedule.decay_lr": 3e-4,
    }
    args = ["run", "train", "--embodiment", "aloha", "--model-config", str(files / "model.json")]
    args += ["--backend", backend, "--exp-name", "fast", "--dataset", str(files / "dataset")]
    args += ["--tokenizer", str(files / "spm" / "tokenizer.model"), "--fast-tokenizer", str(files / "fast")]
    args += ["--default-prompt", TASK]
    for key, value in settings.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    manager = PluginManager(entry_points=False, plugins=[("aloha", aloha), (backend, plugin)])
    with use_plugin_manager(manager):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        exp_dir = tmp_path / "pi0_fast" / "fast"
        losses = [line["loss"] for line in read_metrics(exp_dir)]
        assert losses[0] / losses[-1] >= LOSS_DROP, losses

        # The checkpoint ships both tokenizers: nothing but its folder is needed to serve it.
        targets = training_targets(files, exp_dir)
        # A constant chunk's FAST code is its DC coefficient sqrt(H) * y (y normalized to
        # [-1, 1] by the quantiles), rounded to 1 / scale: y is off by at most
        # 0.5 / (scale * sqrt(H)), which unnormalizing stretches by (q99 - q01) / 2.
        stats = load_norm_stats(exp_dir / "assets")["actions"]
        bound = 0.5 / (SCALE * np.sqrt(HORIZON)) * (stats.q99 - stats.q01) / 2 + 1e-5
        policy = create_policy(checkpoint=exp_dir / str(STEPS) / "model", embodiment="aloha", backend=backend)
        with BackgroundServer(policy, ServerConfig(port=0)) as background:
            robot = WebsocketClientPolicy(port=background.server.port)
            for label in (0, 1):
                for state in random_states(3, label, seed=1000 + label):
                    observation = {
                        "images": {"cam_high": np.full((3, *IMAGE), 90 + 60 * label, np.uint8)},
                        "state": state,
                        "prompt": TASK,
                    }
                    generated = policy.model.sample_actions(policy.prepare(observation))[0]
                    trained = targets[label]
                    assert generated[: len(trained)].tolist() == trained, (label, generated, trained)
                    answer = robot.infer(observation)
                    assert answer["actions"].shape == (HORIZON, DIM)
                    error = np.abs(answer["actions"] - ACTIONS[label][None])
                    assert np.all(error <= bound[None]), (error, bound)
            robot.close()


def training_targets(files, exp_dir) -> dict[int, list[int]]:
    """Per class, the token ids the loss scored on the class's first training frame: the
    training pipeline's own output, with the run's norm stats."""
    from openpi_cli.train import read_model_config
    from openpi_core.data.lerobot import LeRobotDataset
    from openpi_core.plugins import get_embodiment
    from openpi_core.training.presets import DataRecipe, training_transforms
    from openpi_core.transforms import compose, load_norm_stats

    dataset = LeRobotDataset(files / "dataset", action_horizon=HORIZON)
    recipe = DataRecipe(
        get_embodiment("aloha"),
        read_model_config(files / "model.json"),
        tasks=dataset.tasks,
        default_prompt=TASK,
        tokenizer=files / "spm" / "tokenizer.model",
        fast_tokenizer=files / "fast",
    )
    transform = compose(training_transforms(recipe, load_norm_stats(exp_dir / "assets")))
    targets = {}
    for label, frame in ((0, 0), (1, FRAMES)):
        sample = transform(dataset[frame])
        targets[label] = np.asarray(sample["tokenized_prompt"])[np.asarray(sample["token_loss_mask"])].tolist()
    assert targets[0] != targets[1]
    return targets
