"""The training loop with a numpy trainer and loader: resume equality, metrics, progress,
seeded noise, initial weights, optional loggers."""

import io
import json
import re
import sys
import types

import attrs
import numpy as np
import pytest

from openpi_core.checkpoints import load_checkpoint, save_native
from openpi_core.errors import InputError, OpenpiError
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.training import checkpoint as ckpt
from openpi_core.training.config import CosineDecaySchedule, LoRAConfig, TrainConfig
from openpi_core.training.loop import init_params, initial_params, read_metrics, run_training, step_seed, train
from openpi_core.training.schedule import learning_rate
from openpi_core.training.testing import FakeLoader, LinearBackend, LinearTrainer
from openpi_core.transforms import NormStats

CONFIG = Pi0Config(
    llm=GEMMA_VARIANTS["dummy"],
    action_expert=GEMMA_VARIANTS["dummy"],
    vision=SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2, image_size=(28, 28)),
    vocab_size=32,
    action_dim=4,
    action_horizon=3,
    max_token_len=6,
    dtype="float32",
)
STATS = {"state": NormStats(mean=np.zeros(4), std=np.ones(4))}


def train_config(tmp_path, steps=8, **overrides) -> TrainConfig:
    values = {
        "batch_size": 4,
        "num_train_steps": steps,
        "save_interval": 4,
        "log_interval": 2,
        "keep_period": None,
        "ema_decay": 0.9,
        "lr_schedule": CosineDecaySchedule(warmup_steps=2, peak_lr=0.05, decay_steps=20, decay_lr=0.005),
        "checkpoint_base_dir": str(tmp_path),
    }
    return TrainConfig("exp", **(values | overrides))


def run(train, loader=None, **kwargs):
    loader = loader or FakeLoader(CONFIG, train.batch_size, batches_per_epoch=3)
    kwargs.setdefault("progress", None)
    return run_training(LinearBackend(), loader, CONFIG, train, name="tiny", norm_stats=STATS, **kwargs)


class CrashingLoader(FakeLoader):
    """Dies (like a preempted job) when asked for batch number ``crash_at``."""

    def __init__(self, *args, crash_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_at, self.served = crash_at, 0

    def __iter__(self):
        for batch in super().__iter__():
            if self.served == self.crash_at:
                raise KeyboardInterrupt
            self.served += 1
            yield batch


def without_timing(lines):
    return [{key: value for key, value in line.items() if key != "steps_per_sec"} for line in lines]


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    whole = run(train_config(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        run(train_config(tmp_path / "b"), CrashingLoader(CONFIG, 4, batches_per_epoch=3, crash_at=6))
    exp_b = tmp_path / "b" / "tiny" / "exp"
    assert ckpt.latest_step(exp_b) == 4
    assert [line["step"] for line in read_metrics(exp_b)] == [2, 4, 6]
    with pytest.raises(InputError, match="--resume"):
        run(train_config(tmp_path / "b"))
    resumed = run(train_config(tmp_path / "b"), resume=True)

    assert whole.step == resumed.step == 8
    assert without_timing(read_metrics(whole.exp_dir)) == without_timing(read_metrics(resumed.exp_dir))
    state_a, arrays_a = ckpt.load_train_checkpoint(whole.exp_dir)
    state_b, arrays_b = ckpt.load_train_checkpoint(resumed.exp_dir)
    assert sorted(arrays_a) == sorted(arrays_b)
    assert all(np.array_equal(arrays_a[key], arrays_b[key]) for key in arrays_a)
    assert state_a.loader_state == state_b.loader_state == {"epoch": 2, "index": 2}
    assert state_a.numpy_rng_state == state_b.numpy_rng_state


def test_resume_equality_with_a_shorter_first_leg(tmp_path):
    whole = run(train_config(tmp_path / "a"))
    run(train_config(tmp_path / "b", steps=4))
    resumed = run(train_config(tmp_path / "b"), resume=True)
    assert without_timing(read_metrics(whole.exp_dir)) == without_timing(read_metrics(resumed.exp_dir))
    _, arrays_a = ckpt.load_train_checkpoint(whole.exp_dir)
    _, arrays_b = ckpt.load_train_checkpoint(resumed.exp_dir)
    assert all(np.array_equal(arrays_a[key], arrays_b[key]) for key in arrays_a)


def test_metrics_lines_and_checkpoints(tmp_path):
    train = train_config(tmp_path, steps=25, log_interval=4, save_interval=8, keep_period=16)
    result = run(train)
    lines = read_metrics(result.exp_dir)
    assert [line["step"] for line in lines] == [4, 8, 12, 16, 20, 24, 25]
    assert all(set(line) == {"step", "loss", "grad_norm", "lr", "steps_per_sec"} for line in lines)
    for line in lines:
        assert line["lr"] == pytest.approx(learning_rate(train.lr_schedule, line["step"] - 1))
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert result.metrics == lines[-1]
    assert ckpt.checkpoint_steps(result.exp_dir) == [16, 25]
    assert result.checkpoint == result.exp_dir / "25"
    assert (result.exp_dir / "assets" / "norm_stats.json").is_file()
    config, params = load_checkpoint(result.checkpoint / "model")
    assert config == CONFIG and "action_out_proj.kernel" in params


def test_progress_bar_shows_loss_lr_grad_norm_and_rate(tmp_path):
    output = io.StringIO()
    run(train_config(tmp_path), progress=output)
    text = output.getvalue()
    for piece in ("8/8", "loss=", "lr=", "grad_norm=", "steps/s"):
        assert piece in text, text


class SpyTrainer(LinearTrainer):
    calls: list = []

    def step(self, observation, actions, noise, time, lr):
        SpyTrainer.calls.append((noise, time, lr))
        return super().step(observation, actions, noise, time, lr)


def test_noise_and_time_come_from_seed_and_step(tmp_path, monkeypatch):
    monkeypatch.setattr(LinearBackend, "create_trainer", lambda self, m, t, p: SpyTrainer(m, t, p))
    SpyTrainer.calls = []
    train = train_config(tmp_path, steps=3, seed=11)
    run(train)
    seeds = [step_seed(11, step) for step in range(3)]
    assert len(set(seeds)) == 3
    for step, (noise, time, lr) in enumerate(SpyTrainer.calls):
        assert np.array_equal(noise, draw_noise(seeds[step], (4, CONFIG.action_horizon, CONFIG.action_dim)))
        assert np.array_equal(time, draw_time(seeds[step], 4))
        assert lr == learning_rate(train.lr_schedule, step)


def test_init_params_are_seeded_small_noise():
    params = init_params(CONFIG, 0)
    assert np.array_equal(params["llm.embedding"], init_params(CONFIG, 0)["llm.embedding"])
    assert not np.array_equal(params["llm.embedding"], init_params(CONFIG, 1)["llm.embedding"])
    assert np.std(params["llm.layers.mlp.down"]) == pytest.approx(0.02, rel=0.1)
    assert np.mean(params["vision.final_norm.scale"]) == pytest.approx(1.0, abs=0.05)
    assert all(value.dtype == np.float32 for value in params.values())


def test_initial_params_from_a_base_checkpoint_with_lora(tmp_path):
    base = init_params(CONFIG, 5)
    save_native(tmp_path / "base", CONFIG, base)
    train = TrainConfig("x", expert_lora=LoRAConfig(rank=2, alpha=2.0))
    params = initial_params(CONFIG, train, tmp_path / "base")
    assert all(np.array_equal(params[name], value) for name, value in base.items())
    adapters = sorted(set(params) - set(base))
    assert len(adapters) == 10 and all(name.startswith("expert.") for name in adapters)


def test_diverging_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(LinearTrainer, "step", lambda *args: {"loss": float("nan"), "grad_norm": 1.0})
    with pytest.raises(OpenpiError, match="diverged"):
        run(train_config(tmp_path))


def test_resume_with_another_model_config_is_refused(tmp_path):
    run(train_config(tmp_path, steps=4))

    other = attrs.evolve(CONFIG, action_horizon=5)
    with pytest.raises(InputError, match="another model config"):
        run_training(
            LinearBackend(),
            FakeLoader(other, 4),
            other,
            train_config(tmp_path),
            name="tiny",
            resume=True,
            progress=None,
        )


def test_empty_loader_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no batch"):
        run(train_config(tmp_path), FakeLoader(CONFIG, 4, batches_per_epoch=0))


def test_tensorboard_and_wandb_receive_the_metrics_when_installed(tmp_path, monkeypatch):
    scalars, logged, inits = [], [], []

    class SummaryWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def flush(self):
            pass

        def close(self):
            scalars.append("closed")

    class Run:
        id = "run-123"

        def log(self, values, step):
            logged.append((step, sorted(values)))

        def finish(self):
            logged.append("finished")

    def init(**kwargs):
        inits.append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    result = run(train_config(tmp_path, steps=4), tensorboard=True, wandb=True)
    assert ("train/loss", 2) in scalars and ("train/lr", 4) in scalars and scalars[-1] == "closed"
    assert logged == [
        (2, ["grad_norm", "loss", "lr", "steps_per_sec"]),
        (4, ["grad_norm", "loss", "lr", "steps_per_sec"]),
        "finished",
    ]
    assert inits[0]["id"] is None and inits[0]["name"] == "exp"
    assert (result.exp_dir / "wandb_id.txt").read_text() == "run-123"

    run(train_config(tmp_path, steps=6), resume=True, wandb=True)
    assert inits[1]["id"] == "run-123"


def test_loggers_that_are_not_installed_are_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    result = run(train_config(tmp_path, steps=2), tensorboard=True, wandb=True)
    assert result.step == 2
    assert "TensorBoard" in caplog.text and "Weights & Biases" in caplog.text
    assert json.loads((result.exp_dir / "metrics.jsonl").read_text().splitlines()[0])["step"] == 2


# -- a damaged metrics.jsonl --------------------------------------------------------------


def crash_after_step_six(tmp_path):
    """A run killed after its step 4 checkpoint and step 6 metrics line; its experiment dir."""
    with pytest.raises(KeyboardInterrupt):
        run(train_config(tmp_path), CrashingLoader(CONFIG, 4, batches_per_epoch=3, crash_at=6))
    return tmp_path / "tiny" / "exp"


@pytest.mark.parametrize("tail", ['{"step": 8, "loss": 0.3', "\x00\x00\x00\x00", '{"step": 8, "lo\n'])
def test_resume_drops_a_torn_last_metrics_line_with_one_warning(tmp_path, caplog, tail):
    whole = run(train_config(tmp_path / "whole"))
    exp_dir = crash_after_step_six(tmp_path / "torn")
    with (exp_dir / "metrics.jsonl").open("a") as file:
        file.write(tail)  # the power went out mid-append
    with caplog.at_level("WARNING", logger="openpi_core.training.loop"):
        resumed = run(train_config(tmp_path / "torn"), resume=True)
    torn = [record for record in caplog.records if "incomplete" in record.getMessage()]
    assert len(torn) == 1 and "metrics.jsonl" in torn[0].getMessage()
    assert resumed.step == 8
    assert without_timing(read_metrics(exp_dir)) == without_timing(read_metrics(whole.exp_dir))


def test_a_corrupt_metrics_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    exp_dir = crash_after_step_six(tmp_path)
    path = exp_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))} line 2 is not a metrics record"):
        run(train_config(tmp_path), resume=True)
    with pytest.raises(InputError, match="line 2"):
        read_metrics(exp_dir)


def test_a_failed_metrics_rewrite_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    exp_dir = crash_after_step_six(tmp_path)
    before = (exp_dir / "metrics.jsonl").read_bytes()

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    settings = train_config(tmp_path)
    trainer = LinearTrainer(CONFIG, settings, init_params(CONFIG, 0))
    loader = FakeLoader(CONFIG, settings.batch_size, batches_per_epoch=3)
    with pytest.raises(OSError, match="No space left"):  # rewriting metrics.jsonl without the step 6 line
        train(trainer, loader, CONFIG, settings, exp_dir=exp_dir, backend="linear", name="tiny", start_step=4)
    assert (exp_dir / "metrics.jsonl").read_bytes() == before
    assert not [p for p in exp_dir.iterdir() if p.name.startswith(".metrics")]
