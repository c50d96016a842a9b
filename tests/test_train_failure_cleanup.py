"""A failed ``pi run train`` removes the folders it made, and nothing else."""

import pytest
from click.testing import CliRunner

import openpi_core.training.testing
from openpi_cli.main import cli
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.training import checkpoint as ckpt

openpi_embodiment_aloha = pytest.importorskip("openpi_embodiment_aloha.plugin")
pytest.importorskip("pyarrow")
pytest.importorskip("av")

TINY = openpi_core.training.testing.tiny_pi0_config(action_horizon=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = openpi_core.training.testing.write_training_files(
        tmp_path_factory.mktemp("train_failure"),
        TINY,
        ["do the synthetic task", "Transfer cube", "0 1 2 3 4 5 6 7 8 9"],
        vocab_size=34,
        episodes=1,
        frames_per_episode=8,
    )
    (root / "not_a_dataset").mkdir()
    (root / "not_a_dataset" / "notes.txt").write_text("recordings go here\n")
    return root


@pytest.fixture(autouse=True)
def plugins():
    manager = PluginManager(
        entry_points=False,
        plugins=[("aloha", openpi_embodiment_aloha), ("linear", openpi_core.training.testing)],
    )
    with use_plugin_manager(manager):
        yield


def train(files, base, dataset, *extra):
    args = [
        "run", "train", "--config", "pi0_aloha_sim", "--model-config", files / "tiny.json", "--backend", "linear",
        "--exp-name", "tiny", "--dataset", files / dataset, "--tokenizer", files / "tok.model", "--set", f"checkpoint_base_dir={base}",
        "--set", "num_workers=0", "--set", "batch_size=2", "--set", "save_interval=2", "--set", "num_train_steps=2",
        *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def test_a_run_on_a_folder_that_is_no_dataset_leaves_no_folder_behind(files, tmp_path):
    base = tmp_path / "checkpoints"
    result = train(files, base, "not_a_dataset")
    assert result.exit_code == 1, result.output
    assert not base.exists()
    assert (files / "not_a_dataset" / "notes.txt").is_file()


def test_folders_that_existed_before_stay(files, tmp_path):
    base = tmp_path / "checkpoints"
    (base / "pi0_aloha_sim" / "other").mkdir(parents=True)
    result = train(files, base, "not_a_dataset")
    assert result.exit_code == 1, result.output
    assert sorted(path.name for path in (base / "pi0_aloha_sim").iterdir()) == ["other"]


def test_a_failed_resume_keeps_the_experiment_and_its_checkpoints(files, tmp_path):
    base = tmp_path / "checkpoints"
    assert train(files, base, "dataset").exit_code == 0
    exp_dir = base / "pi0_aloha_sim" / "tiny"
    assert ckpt.checkpoint_steps(exp_dir) == [2]
    failed = train(files, base, "not_a_dataset", "--resume")
    assert failed.exit_code == 1, failed.output
    assert ckpt.checkpoint_steps(exp_dir) == [2]


def test_a_failed_resume_of_a_folder_without_checkpoints_keeps_it(files, tmp_path):
    exp_dir = tmp_path / "checkpoints" / "pi0_aloha_sim" / "tiny"
    exp_dir.mkdir(parents=True)
    (exp_dir / "notes.txt").write_text("mine\n")
    failed = train(files, tmp_path / "checkpoints", "not_a_dataset", "--resume")
    assert failed.exit_code == 1, failed.output
    assert (exp_dir / "notes.txt").is_file()


def test_a_refused_overwrite_and_resume_deletes_nothing(files, tmp_path):
    exp_dir = tmp_path / "checkpoints" / "pi0_aloha_sim" / "tiny"
    exp_dir.mkdir(parents=True)
    failed = train(files, tmp_path / "checkpoints", "dataset", "--resume", "--overwrite")
    assert failed.exit_code == 1 and "exclude each other" in failed.output
    assert exp_dir.is_dir()


def test_a_run_that_failed_after_a_checkpoint_keeps_it(files, tmp_path, monkeypatch):
    import openpi_core.training.loop as loop

    run_training = loop.run_training

    def save_then_fail(*args, **kwargs):
        run_training(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "run_training", save_then_fail)
    base = tmp_path / "checkpoints"
    result = train(files, base, "dataset")
    assert result.exit_code != 0
    assert ckpt.checkpoint_steps(base / "pi0_aloha_sim" / "tiny") == [2]
