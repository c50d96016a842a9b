"""The core must stay importable on a robot computer with numpy alone."""

import json
import pkgutil
import subprocess
import sys

import openpi_core

FRAMEWORKS = ("jax", "torch", "equinox", "flax", "lerobot", "tensorstore", "orbax")


def test_core_and_every_submodule_import_without_frameworks():
    modules = sorted(info.name for info in pkgutil.walk_packages(openpi_core.__path__, prefix="openpi_core."))
    assert "openpi_core.plugins" in modules and "openpi_core.observation" in modules
    script = (
        "import importlib, json, sys\n"
        f"for name in {['openpi_core', *modules]!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {list(FRAMEWORKS)!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
