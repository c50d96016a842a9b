"""Training checkpoints: layout, atomic writes, keep_period pruning, --resume/--overwrite."""

import hashlib
import json
import re

import numpy as np
import pytest

from openpi_core.checkpoints import load_checkpoint
from openpi_core.errors import InputError
from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.observation import Observation
from openpi_core.training import checkpoint as ckpt
from openpi_core.training.config import TrainConfig
from openpi_core.training.loop import init_params
from openpi_core.training.testing import FakeLoader, LinearTrainer
from openpi_core.transforms import NormStats, load_norm_stats

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
STATS = {"state": NormStats(mean=np.zeros(4), std=np.ones(4)), "actions": NormStats(mean=np.ones(4), std=np.ones(4))}


def make_trainer(train: TrainConfig) -> LinearTrainer:
    trainer = LinearTrainer(CONFIG, train, init_params(CONFIG, 0))
    loader = FakeLoader(CONFIG, 2)
    batch = next(iter(loader))
    actions = batch["actions"]
    trainer.step(Observation.from_dict(batch), actions, np.ones_like(actions), np.full(2, 0.5, np.float32), 0.1)
    return trainer


def save(exp_dir, trainer, step, train, keep_period=None, **kwargs):
    state = ckpt.make_train_state(
        step,
        loader_state={"epoch": 0, "index": step},
        train_config=train,
        model_config=CONFIG,
        backend="linear",
        name="t",
    )
    return ckpt.save_train_checkpoint(exp_dir, trainer, state, CONFIG, STATS, keep_period=keep_period, **kwargs)


def test_layout_and_round_trip(tmp_path):
    train = TrainConfig("exp", ema_decay=0.5)
    trainer = make_trainer(train)
    tokenizer = tmp_path / "tok.model"
    tokenizer.write_bytes(b"spm")
    step_dir = save(tmp_path / "exp", trainer, 7, train, model_assets={"assets/tokenizer.model": tokenizer})
    assert step_dir == tmp_path / "exp" / "7"
    assert sorted(p.name for p in step_dir.iterdir()) == ["model", "train_state.json", "train_state.safetensors"]
    assert ckpt.latest_step(tmp_path / "exp") == 7

    config, params = load_checkpoint(step_dir / "model")
    assert config == CONFIG
    assert all(np.array_equal(params[name], value) for name, value in trainer.inference_params().items())
    assert np.array_equal(params["action_out_proj.kernel"], trainer.ema["action_out_proj.kernel"])
    assert load_norm_stats(step_dir / "model") == STATS
    assert (step_dir / "model" / "assets" / "tokenizer.model").read_bytes() == b"spm"

    state, arrays = ckpt.load_train_checkpoint(tmp_path / "exp")
    assert state.step == 7 and state.loader_state == {"epoch": 0, "index": 7}
    assert state.backend == "linear" and state.family == "pi0" and state.train_config["ema_decay"] == 0.5
    expected = trainer.state_dict()
    assert sorted(arrays) == sorted(expected)
    assert all(np.array_equal(arrays[key], expected[key]) for key in expected)
    assert int(arrays["opt/count"]) == 1


def test_numpy_rng_state_round_trips_through_json():
    np.random.seed(3)
    state = json.loads(json.dumps(ckpt.numpy_rng_state()))
    first = np.random.random(4)
    ckpt.set_numpy_rng_state(state)
    assert np.array_equal(np.random.random(4), first)


def test_a_failure_mid_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train = TrainConfig("exp")
    trainer = make_trainer(train)
    exp_dir = tmp_path / "exp"
    save(exp_dir, trainer, 1, train)
    before = {p.relative_to(exp_dir): p.read_bytes() for p in exp_dir.rglob("*") if p.is_file()}

    def crash(path, *args, **kwargs):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "write_safetensors", crash)
    trainer.step(*_batch(), lr=0.1)
    with pytest.raises(OSError, match="disk full"):
        save(exp_dir, trainer, 2, train)

    assert ckpt.latest_step(exp_dir) == 1
    after = {p.relative_to(exp_dir): p.read_bytes() for p in exp_dir.rglob("*") if p.is_file()}
    assert after == before
    state, _ = ckpt.load_train_checkpoint(exp_dir)
    assert state.step == 1


def test_a_killed_write_leaves_only_a_hidden_directory_that_resume_removes(tmp_path):
    train = TrainConfig("exp")
    exp_dir = tmp_path / "exp"
    save(exp_dir, make_trainer(train), 3, train)
    leftover = exp_dir / ".4.abc.partial"
    (leftover / "model").mkdir(parents=True)
    (leftover / "train_state.json").write_text("{")
    assert ckpt.latest_step(exp_dir) == 3
    assert ckpt.prepare_experiment_dir(exp_dir, resume=True, overwrite=False)
    assert not leftover.exists()


def _batch():
    batch = next(iter(FakeLoader(CONFIG, 2, seed=5)))
    actions = batch["actions"]
    return Observation.from_dict(batch), actions, np.zeros_like(actions), np.full(2, 0.3, np.float32)


@pytest.mark.parametrize(("keep_period", "kept"), [(4, [4, 8, 10]), (None, [10]), (100, [10])])
def test_keep_period_prunes_older_steps(tmp_path, keep_period, kept):
    train = TrainConfig("exp")
    trainer = make_trainer(train)
    for step in range(1, 11):
        save(tmp_path, trainer, step, train, keep_period=keep_period)
        assert ckpt.latest_step(tmp_path) == step
    assert ckpt.checkpoint_steps(tmp_path) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(str(step) for step in kept)


def test_starting_over_an_existing_experiment_needs_resume_or_overwrite(tmp_path):
    exp_dir = tmp_path / "exp"
    assert not ckpt.prepare_experiment_dir(exp_dir, resume=False, overwrite=False)
    assert exp_dir.is_dir()
    with pytest.raises(InputError, match="already exists") as error:
        ckpt.prepare_experiment_dir(exp_dir, resume=False, overwrite=False)
    assert "--resume" in str(error.value) and "--overwrite" in str(error.value)


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(InputError, match="--resume and --overwrite"):
        ckpt.prepare_experiment_dir(tmp_path, resume=True, overwrite=True)


def test_overwrite_deletes_the_experiment(tmp_path):
    train = TrainConfig("exp")
    save(tmp_path / "exp", make_trainer(train), 2, train)
    (tmp_path / "exp" / "metrics.jsonl").write_text("{}\n")
    assert not ckpt.prepare_experiment_dir(tmp_path / "exp", resume=False, overwrite=True)
    assert list((tmp_path / "exp").iterdir()) == []


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    assert not ckpt.prepare_experiment_dir(tmp_path / "new", resume=True, overwrite=False)
    (tmp_path / "new" / "metrics.jsonl").write_text("")
    assert not ckpt.prepare_experiment_dir(tmp_path / "new", resume=True, overwrite=False)


def test_loading_a_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="holds no training checkpoint"):
        ckpt.load_train_checkpoint(tmp_path)
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "train_state.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="version 99"):
        ckpt.load_train_checkpoint(tmp_path)


def test_experiment_dir_is_base_name_exp(tmp_path):
    train = TrainConfig("run1", checkpoint_base_dir=str(tmp_path))
    assert ckpt.experiment_dir(train, "pi0_aloha_sim") == tmp_path / "pi0_aloha_sim" / "run1"


# -- integrity: checksums, damaged files, atomic norm stats ----------------------------


def flip_middle_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def test_train_state_and_model_record_the_checksums_of_every_file(tmp_path):
    train = TrainConfig("exp")
    tokenizer = tmp_path / "tok.model"
    tokenizer.write_bytes(b"spm")
    step_dir = save(tmp_path / "exp", make_trainer(train), 4, train, model_assets={"assets/tokenizer.model": tokenizer})
    files = json.loads((step_dir / ckpt.TRAIN_STATE_JSON).read_text())["files"]
    arrays = (step_dir / ckpt.TRAIN_STATE_WEIGHTS).read_bytes()
    assert files == {ckpt.TRAIN_STATE_WEIGHTS: {"bytes": len(arrays), "sha256": hashlib.sha256(arrays).hexdigest()}}
    model_files = json.loads((step_dir / "model" / "manifest.json").read_text())["files"]
    assert sorted(model_files) == ["assets/tokenizer.model", "model.safetensors", "norm_stats.json"]
    assert model_files["assets/tokenizer.model"]["sha256"] == hashlib.sha256(b"spm").hexdigest()


def test_changed_train_state_arrays_are_refused_naming_the_file_and_the_earlier_step(tmp_path, monkeypatch):
    train = TrainConfig("exp")
    trainer = make_trainer(train)
    save(tmp_path / "exp", trainer, 4, train, keep_period=4)
    save(tmp_path / "exp", trainer, 8, train, keep_period=4)
    arrays = tmp_path / "exp" / "8" / ckpt.TRAIN_STATE_WEIGHTS
    flip_middle_byte(arrays)
    with pytest.raises(InputError, match=rf"{re.escape(str(arrays))} has changed since it was written") as error:
        ckpt.load_train_checkpoint(tmp_path / "exp")
    assert "previous checkpoint (step 4)" in str(error.value)
    assert ckpt.load_train_checkpoint(tmp_path / "exp", 4)[0].step == 4
    assert ckpt.load_train_checkpoint(tmp_path / "exp", verify=False)[0].step == 8
    monkeypatch.setenv("OPENPI_SKIP_CHECKSUMS", "1")
    assert ckpt.load_train_checkpoint(tmp_path / "exp")[0].step == 8


def test_truncated_train_state_arrays_are_a_named_error_with_or_without_checksums(tmp_path):
    train = TrainConfig("exp")
    step_dir = save(tmp_path / "exp", make_trainer(train), 4, train)
    arrays = step_dir / ckpt.TRAIN_STATE_WEIGHTS
    arrays.write_bytes(arrays.read_bytes()[:-100])
    with pytest.raises(InputError, match=rf"{re.escape(str(arrays))} is \d+ bytes, but .* records \d+"):
        ckpt.load_train_checkpoint(tmp_path / "exp", verify=False)
    document = json.loads((step_dir / ckpt.TRAIN_STATE_JSON).read_text())
    del document["files"], document["sha256"]  # as written before checksums were recorded
    (step_dir / ckpt.TRAIN_STATE_JSON).write_text(json.dumps(document))
    with pytest.raises(InputError, match=rf"{re.escape(str(arrays))} is not a readable safetensors file"):
        ckpt.load_train_checkpoint(tmp_path / "exp")


def test_a_train_state_written_before_checksums_still_loads(tmp_path):
    train = TrainConfig("exp")
    trainer = make_trainer(train)
    step_dir = save(tmp_path / "exp", trainer, 4, train)
    document = json.loads((step_dir / ckpt.TRAIN_STATE_JSON).read_text())
    del document["files"], document["sha256"]
    (step_dir / ckpt.TRAIN_STATE_JSON).write_text(json.dumps(document))
    state, arrays = ckpt.load_train_checkpoint(tmp_path / "exp")
    assert state.step == 4 and np.array_equal(arrays["opt/count"], trainer.state_dict()["opt/count"])


def test_a_changed_byte_in_train_state_json_is_refused(tmp_path):
    train = TrainConfig("exp")
    step_dir = save(tmp_path / "exp", make_trainer(train), 4, train)
    file = step_dir / ckpt.TRAIN_STATE_JSON
    text = file.read_text()
    assert '"index": 4' in text
    file.write_text(text.replace('"index": 4', '"index": 5'))  # the loader would skip a batch
    with pytest.raises(InputError, match=rf"{re.escape(str(file))} has changed since it was written"):
        ckpt.load_train_checkpoint(tmp_path / "exp")
    assert ckpt.load_train_checkpoint(tmp_path / "exp", verify=False)[0].loader_state["index"] == 5


def test_truncated_train_state_json_is_a_named_error(tmp_path):
    train = TrainConfig("exp")
    step_dir = save(tmp_path / "exp", make_trainer(train), 4, train)
    file = step_dir / ckpt.TRAIN_STATE_JSON
    file.write_text(file.read_text()[:50])
    with pytest.raises(InputError, match=rf"{re.escape(str(file))} is not valid JSON"):
        ckpt.load_train_checkpoint(tmp_path / "exp")


def test_changed_norm_stats_of_a_step_are_refused_when_its_model_is_loaded(tmp_path):
    train = TrainConfig("exp")
    step_dir = save(tmp_path / "exp", make_trainer(train), 4, train)
    stats = step_dir / "model" / "norm_stats.json"
    stats.write_text(stats.read_text().replace("1.0", "2.0"))
    with pytest.raises(InputError, match=rf"{re.escape(str(stats))} (has changed|is \d+ bytes)"):
        load_checkpoint(step_dir / "model")


def test_a_failed_norm_stats_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = ckpt.save_experiment_norm_stats(tmp_path / "exp", STATS)
    before = path.read_bytes()

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    changed = {"state": NormStats(mean=np.full(4, 5.0), std=np.ones(4))}
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_experiment_norm_stats(tmp_path / "exp", changed)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_saving_a_step_hashes_each_file_once(tmp_path, monkeypatch):
    from openpi_core.checkpoints import _io

    hashed = []
    real = _io.sha256_file
    monkeypatch.setattr(_io, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    train = TrainConfig("exp")
    save(tmp_path / "exp", make_trainer(train), 4, train)
    assert sorted(hashed) == ["model.safetensors", "norm_stats.json", "train_state.safetensors"]
