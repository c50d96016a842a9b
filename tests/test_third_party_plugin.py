"""The echo example is a complete third-party plugin: installed, it shows up in ``pi``."""

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from openpi_core.plugins import PluginManager

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "echo-embodiment"


@pytest.mark.slow
def test_echo_plugin_installed_in_a_fresh_environment_is_listed(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The new environment sees this test's environment (not the base interpreter's) through
    # a .pth line that adds its site-packages as a site dir, so its editable installs resolve too.
    new_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in dict.fromkeys(here))
    (Path(new_site) / "outer-environment.pth").write_text(lines)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, EXAMPLE],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", wheel], check=True, capture_output=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
    environment["PI_LOAD_PLUGINS"] = "echo,openpi-embodiment-aloha"
    result = subprocess.run(
        [python, "-m", "openpi_cli", "plugins", "--json"], capture_output=True, text=True, env=environment, check=True
    )
    infos = {info["name"]: info for info in json.loads(result.stdout)}
    assert infos["echo"]["distribution"] == "openpi-embodiment-echo"
    assert infos["echo"]["registered"] == {"embodiment": ["echo"]}
    assert infos["echo"]["error"] is None
    shown = subprocess.run(
        [python, "-m", "openpi_cli", "embodiments", "show", "echo"], capture_output=True, text=True, env=environment
    )
    assert shown.returncode == 0, shown.stderr
    assert "camera: [*, *, 3] uint - RGB, HWC uint8" in shown.stdout


def test_echo_transforms_follow_the_embodiment_contract(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    from openpi_embodiment_echo import plugin

    embodiment = PluginManager(entry_points=False, plugins=[("echo", plugin)]).registry("embodiment").get("echo")
    observation = embodiment.example(seed=3)
    embodiment.validate(observation)
    group = embodiment.transforms("pi0")
    model_input = group.inputs[0](observation)
    assert model_input["image_mask"]["base_0_rgb"] and not model_input["image_mask"]["left_wrist_0_rgb"]
    assert (model_input["image"]["base_0_rgb"] == observation["camera"]).all()
    actions = {"actions": __import__("numpy").arange(20.0).reshape(2, 10)}
    assert group.outputs[0](actions)["actions"].tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]
