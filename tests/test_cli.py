"""The ``pi`` command over real plugins, with a broken one among them."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from openpi_cli.inspect import dtype_kinds_in_words
from openpi_cli.main import cli
from openpi_core.plugins import PluginManager, use_plugin_manager


@pytest.fixture
def manager_with_broken_plugin(tmp_path, monkeypatch):
    (tmp_path / "brokenplug.py").write_text("raise ImportError('needs the vendor SDK')\n")
    info = tmp_path / "broken_dist-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[openpi]\nbrokenplug = brokenplug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PI_LOAD_PLUGINS", "aloha,droid,libero,ur5,brokenplug")
    with use_plugin_manager(PluginManager()) as manager:
        yield manager
    sys.modules.pop("brokenplug", None)


def test_plugins_table_shows_embodiments_and_the_failure(manager_with_broken_plugin):
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "openpi-embodiment-aloha" in result.output and "embodiment: aloha" in result.output
    assert "FAILED: ImportError: needs the vendor SDK" in result.output


def test_plugins_json_and_the_rest_of_pi_keeps_working(manager_with_broken_plugin):
    infos = {info["name"]: info for info in json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)}
    assert infos["ur5"]["registered"] == {"embodiment": ["ur5"]}
    assert infos["brokenplug"]["distribution"] == "broken-dist"
    shown = CliRunner().invoke(cli, ["embodiments", "show", "aloha"])
    assert shown.exit_code == 0, shown.output
    assert "images/cam_high: [*, *, *] uint or float - top camera" in shown.output
    assert "action dim: 14" in shown.output


def test_embodiments_show_prints_dtype_kinds_in_words(manager_with_broken_plugin):
    output = CliRunner().invoke(cli, ["embodiments", "show", "aloha"]).output
    assert "  state: [14] float, int or uint - [left joints 6" in output
    assert "  images/cam_low: [*, *, *] uint or float (optional) - low camera" in output
    assert "(uf)" not in output and "(fiu)" not in output


def test_dtype_kinds_in_words():
    assert dtype_kinds_in_words("f") == "float"
    assert dtype_kinds_in_words("uf") == "uint or float"
    assert dtype_kinds_in_words("fiu") == "float, int or uint"
    assert dtype_kinds_in_words("b") == "bool"


def test_configs_lists_presets_with_their_embodiment(manager_with_broken_plugin):
    output = CliRunner().invoke(cli, ["configs"]).output
    rows = {line.split()[0]: line.split()[1:3] for line in output.splitlines()[2:]}
    assert rows["pi0_aloha_sim"] == ["pi0", "aloha"]
    assert rows["pi05_droid"] == ["pi05", "droid"]


def test_unknown_embodiment_suggests_and_exits_non_zero(manager_with_broken_plugin):
    result = CliRunner().invoke(cli, ["embodiments", "show", "alhoa"])
    assert result.exit_code != 0
    assert "Did you mean 'aloha'?" in result.output


def test_plugins_raising_system_exit_or_keyboard_interrupt_at_import_do_not_end_pi(tmp_path):
    for module, body in (
        ("exitplug", "raise SystemExit('no robot here')\n"),
        ("ctrlcplug", "raise KeyboardInterrupt\n"),
    ):
        (tmp_path / f"{module}.py").write_text(body)
        info = tmp_path / f"{module}_dist-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-dist\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[openpi]\n{module} = {module}\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "PI_LOAD_PLUGINS": "aloha,exitplug,ctrlcplug",
    }
    result = subprocess.run(
        [sys.executable, "-m", "openpi_cli", "plugins"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "FAILED: SystemExit: no robot here" in rows["exitplug"]
    assert "FAILED: KeyboardInterrupt" in rows["ctrlcplug"]
    assert "embodiment: aloha" in rows["aloha"]
    assert "plugin 'exitplug' failed to load: SystemExit: no robot here" in result.stderr
    assert "plugin 'ctrlcplug' failed to load: KeyboardInterrupt" in result.stderr


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("pi (openpi-core) ")
