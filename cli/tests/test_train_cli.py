"""``pi run train`` end to end on a synthetic LeRobot dataset with a tiny model config."""

import json

import numpy as np
import pytest
import sentencepiece
from click.testing import CliRunner

import openpi_core.training.testing
from openpi_cli.main import cli
from openpi_cli.train import apply_overrides
from openpi_core.checkpoints import load_checkpoint
from openpi_core.data.testing import make_synthetic_dataset
from openpi_core.errors import InputError
from openpi_core.models.config import Pi0Config, SiglipConfig
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.serialization import unstructure
from openpi_core.training import checkpoint as ckpt
from openpi_core.training.loop import read_metrics
from openpi_core.transforms import load_norm_stats

openpi_embodiment_aloha = pytest.importorskip("openpi_embodiment_aloha.plugin")

TINY = openpi_core.training.testing.tiny_pi0_config(action_horizon=4)
CORPUS = [
    "pick up the cube and place it in the bowl",
    "Task: transfer cube, State: 0 12 255 128;",
    "Action: open the drawer, fold the towel, uncap the pen",
    "0 1 2 3 4 5 6 7 8 9 10 100 127 128 200 255",
] * 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_synthetic_dataset(root / "dataset", episodes=2, frames_per_episode=12, image_size=(16, 16), fps=10)
    (root / "corpus.txt").write_text("\n".join(CORPUS))
    sentencepiece.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"),
        model_prefix=str(root / "tok"),
        vocab_size=50,
        user_defined_symbols=["\n"],
        minloglevel=2,
    )
    (root / "tiny.json").write_text(json.dumps(unstructure(TINY)))
    return root


@pytest.fixture(autouse=True)
def plugins():
    manager = PluginManager(
        entry_points=False,
        plugins=[("aloha", openpi_embodiment_aloha), ("linear", openpi_core.training.testing)],
    )
    with use_plugin_manager(manager):
        yield


def invoke(files, base, *extra):
    args = [
        "run",
        "train",
        "--config",
        "pi0_aloha_sim",
        "--model-config",
        str(files / "tiny.json"),
        "--backend",
        "linear",
        "--exp-name",
        "tiny",
        "--dataset",
        str(files / "dataset"),
        "--tokenizer",
        str(files / "tok.model"),
        "--set",
        f"checkpoint_base_dir={base}",
        "--set",
        "num_workers=0",
        "--set",
        "batch_size=4",
        "--set",
        "lr_schedule.warmup_steps=2",
        "--set",
        "log_interval=2",
        "--set",
        "save_interval=4",
        *extra,
    ]
    return CliRunner().invoke(cli, args)


def test_train_writes_servable_checkpoints_and_metrics(files, tmp_path):
    result = invoke(files, tmp_path, "--set", "num_train_steps=6", "--set", "keep_period=4")
    assert result.exit_code == 0, result.output
    assert "trained to step 6" in result.output
    exp_dir = tmp_path / "pi0_aloha_sim" / "tiny"
    assert ckpt.checkpoint_steps(exp_dir) == [4, 6]
    assert [line["step"] for line in read_metrics(exp_dir)] == [2, 4, 6]

    model_dir = exp_dir / "6" / "model"
    config, params = load_checkpoint(model_dir)
    assert config == TINY
    assert params["action_out_proj.kernel"].shape == (64, 16)
    stats = load_norm_stats(model_dir)
    assert stats == load_norm_stats(exp_dir / "assets")
    assert sorted(stats) == ["actions", "state"] and stats["state"].mean.shape == (14,)
    assert stats["state"].q01 is not None
    assert (model_dir / "assets" / "tokenizer.model").read_bytes() == (files / "tok.model").read_bytes()

    state, _ = ckpt.load_train_checkpoint(exp_dir)
    assert state.backend == "linear" and state.name == "pi0_aloha_sim"
    assert state.train_config["batch_size"] == 4 and state.loader_state["epoch"] == 1


def test_existing_experiment_needs_resume_or_overwrite_and_resume_continues(files, tmp_path):
    assert invoke(files, tmp_path, "--set", "num_train_steps=4").exit_code == 0
    again = invoke(files, tmp_path, "--set", "num_train_steps=4")
    assert again.exit_code != 0
    assert "--resume" in again.output and "--overwrite" in again.output

    resumed = invoke(files, tmp_path, "--set", "num_train_steps=8", "--resume")
    assert resumed.exit_code == 0, resumed.output
    exp_dir = tmp_path / "pi0_aloha_sim" / "tiny"
    assert ckpt.latest_step(exp_dir) == 8
    assert [line["step"] for line in read_metrics(exp_dir)] == [2, 4, 6, 8]

    fresh = invoke(files, tmp_path, "--set", "num_train_steps=2", "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert ckpt.checkpoint_steps(exp_dir) == [2]


def test_resumed_run_equals_the_uninterrupted_one(files, tmp_path):
    assert invoke(files, tmp_path / "a", "--set", "num_train_steps=8").exit_code == 0
    assert invoke(files, tmp_path / "b", "--set", "num_train_steps=4").exit_code == 0
    assert invoke(files, tmp_path / "b", "--set", "num_train_steps=8", "--resume").exit_code == 0
    _, whole = ckpt.load_train_checkpoint(tmp_path / "a" / "pi0_aloha_sim" / "tiny")
    _, resumed = ckpt.load_train_checkpoint(tmp_path / "b" / "pi0_aloha_sim" / "tiny")
    assert all(np.array_equal(whole[key], resumed[key]) for key in whole)


def test_train_config_file_with_flags_overriding(files, tmp_path):
    (tmp_path / "train.toml").write_text(
        'exp_name = "from_file"\nnum_train_steps = 100\n[lr_schedule]\npeak_lr = 1e-3\n'
    )
    result = invoke(files, tmp_path, "--train-config", str(tmp_path / "train.toml"), "--set", "num_train_steps=2")
    assert result.exit_code == 0, result.output
    state, _ = ckpt.load_train_checkpoint(tmp_path / "pi0_aloha_sim" / "tiny")
    assert state.step == 2
    assert state.train_config["exp_name"] == "tiny"
    assert state.train_config["lr_schedule"]["peak_lr"] == 1e-3


def test_episode_starts_in_the_train_config_oversample_the_first_frames(files, tmp_path):
    (tmp_path / "train.toml").write_text('exp_name = "tiny"\n[episode_starts]\nframes = 3\nrepeats = 4\n')
    result = invoke(files, tmp_path, "--train-config", str(tmp_path / "train.toml"), "--set", "num_train_steps=2")
    assert result.exit_code == 0, result.output
    state, _ = ckpt.load_train_checkpoint(tmp_path / "pi0_aloha_sim" / "tiny")
    # Two episodes of 12 frames, each with its first 3 frames visited 3 more times.
    assert state.loader_state["num_samples"] == 2 * 12 + 2 * 3 * 3
    assert state.train_config["episode_starts"] == {"frames": 3, "repeats": 4}


def test_unknown_train_config_field_is_a_clear_error(files, tmp_path):
    result = invoke(files, tmp_path, "--set", "batch_sise=3")
    assert result.exit_code != 0
    assert "batch_sise" in result.output


def test_embodiment_without_model_config_is_a_usage_error(files):
    result = CliRunner().invoke(
        cli, ["run", "train", "--embodiment", "aloha", "--exp-name", "x", "--dataset", str(files / "dataset")]
    )
    assert result.exit_code == 2
    assert "--model-config" in result.output


def test_overrides_set_nested_fields_as_json():
    data = apply_overrides(
        {"exp_name": "x", "lr_schedule": {"peak_lr": 1.0}},
        ("lr_schedule.peak_lr=2e-4", "ema_decay=null", 'expert_lora={"rank": 4, "alpha": 4}', "exp_name=y"),
    )
    assert data == {
        "exp_name": "y",
        "lr_schedule": {"peak_lr": 2e-4},
        "ema_decay": None,
        "expert_lora": {"rank": 4, "alpha": 4},
    }
    with pytest.raises(InputError, match="key=value"):
        apply_overrides({}, ("batch_size",))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_real_backend_trains_resumes_and_serves(files, tmp_path, backend):
    plugin = pytest.importorskip(f"openpi_backend_{backend}.plugin")
    from openpi_core.policy import create_policy

    model = Pi0Config(
        **{
            **{field: getattr(TINY, field) for field in ("llm", "action_expert", "vocab_size", "action_dim")},
            "vision": SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=(56, 56)),
            "action_horizon": 4,
            "max_token_len": 16,
            "dtype": "float32",
        }
    )
    (tmp_path / "model.json").write_text(json.dumps(unstructure(model)))
    manager = PluginManager(entry_points=False, plugins=[("aloha", openpi_embodiment_aloha), (backend, plugin)])
    common = ("--set", "precision=float32", "--model-config", str(tmp_path / "model.json"), "--backend", backend)
    with use_plugin_manager(manager):
        first = invoke(files, tmp_path / "a", "--set", "num_train_steps=4", *common)
        assert first.exit_code == 0, first.output
        assert invoke(files, tmp_path / "b", "--set", "num_train_steps=2", *common).exit_code == 0
        resumed = invoke(files, tmp_path / "b", "--set", "num_train_steps=4", "--resume", *common)
        assert resumed.exit_code == 0, resumed.output
        _, whole = ckpt.load_train_checkpoint(tmp_path / "a" / "pi0_aloha_sim" / "tiny")
        _, split = ckpt.load_train_checkpoint(tmp_path / "b" / "pi0_aloha_sim" / "tiny")
        assert all(np.array_equal(whole[key], split[key]) for key in whole)

        policy = create_policy(
            checkpoint=tmp_path / "a" / "pi0_aloha_sim" / "tiny" / "4" / "model", embodiment="aloha", backend=backend
        )
        assert policy.infer(policy.embodiment.example(0))["actions"].shape == (4, 14)
