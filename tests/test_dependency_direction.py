"""Dependencies point inward: plugins and the cli depend on core, never on each other."""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SOURCES = sorted([*(ROOT / "plugins").glob("*/src"), *(ROOT / "examples").glob("*/src")])
CLI_SOURCE = ROOT / "cli" / "src" / "openpi_cli"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (inside functions too), and every
    string constant given to ``importlib.import_module``/``__import__``."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            first = node.args[0]
            if name in ("import_module", "__import__"):
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    modules.add(first.value)
                elif isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
                    modules.add(str(first.values[0].value))
    return modules


def offending_imports(sources: list[Path], forbidden_prefix: str, root: Path = ROOT) -> list[str]:
    """``"<file>: <module>"`` for each import of a module named ``forbidden_prefix...`` under ``sources``."""
    return sorted(
        f"{path.relative_to(root)}: {module}"
        for source in sources
        for path in source.rglob("*.py")
        for module in imported_modules(path)
        if module == forbidden_prefix.rstrip("_.") or module.startswith(forbidden_prefix)
    )


def test_the_scan_sees_imports_at_any_level(tmp_path):
    (tmp_path / "sample.py").write_text(
        "import os\n"
        "def f():\n"
        "    from openpi_cli.serve import load_policy\n"
        "    import openpi_embodiment_aloha.sim.env\n"
        "    importlib.import_module(f'openpi_embodiment_aloha.sim.{name}')\n"
    )
    assert imported_modules(tmp_path / "sample.py") == {
        "os",
        "openpi_cli.serve",
        "openpi_embodiment_aloha.sim.env",
        "openpi_embodiment_aloha.sim.",
    }
    assert offending_imports([tmp_path], "openpi_cli", tmp_path) == ["sample.py: openpi_cli.serve"]
    assert offending_imports([tmp_path], "openpi_embodiment_", tmp_path) == [
        "sample.py: openpi_embodiment_aloha.sim.",
        "sample.py: openpi_embodiment_aloha.sim.env",
    ]


def test_there_are_plugins_to_check():
    assert {source.parent.name for source in PLUGIN_SOURCES} >= {"aloha", "droid", "libero", "ur5", "echo-embodiment"}


def test_no_plugin_imports_the_cli():
    assert offending_imports(PLUGIN_SOURCES, "openpi_cli") == []


def test_the_cli_imports_no_plugin():
    assert offending_imports([CLI_SOURCE], "openpi_embodiment_") == []


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda source: source.parent.name)
def test_no_plugin_declares_the_cli(source):
    dependencies = tomllib.loads((source.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [dependency for dependency in dependencies if dependency.startswith("openpi-cli")]


def test_the_cli_declares_no_plugin():
    dependencies = tomllib.loads((ROOT / "cli" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [dependency for dependency in dependencies if dependency.startswith("openpi-embodiment")]
