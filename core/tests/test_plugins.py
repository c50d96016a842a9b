"""The plugin manager: loading policy, registries, failures, lookups."""

import logging
import sys
import types
from pathlib import Path

import pytest

from openpi_core import hookimpl, plugins
from openpi_core.errors import PluginError, UnknownNameError
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.specs import AbstractBackend


class FakeBackend(AbstractBackend):
    families = ()

    def __init__(self, name: str) -> None:
        self.name = name

    def load_model(self, path_or_params, config=None):
        raise AssertionError("not used in these tests")


def plugin_module(name: str, *backends: str) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def openpi_register_backends(register):
        for backend in backends:
            register(FakeBackend(backend))

    module.openpi_register_backends = openpi_register_backends
    return module


@pytest.fixture(autouse=True)
def no_builtin_plugins(monkeypatch):
    """These tests count plugins; the built-ins have a test of their own."""
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", ())


def test_builtins_register_through_the_ordinary_path(monkeypatch):
    monkeypatch.undo()
    infos = {info.name: info for info in PluginManager(entry_points=False).plugins()}
    assert infos["openpi_core.builtin_models"].registered == {"model": ["pi0", "pi05", "pi0_fast"]}
    assert infos["openpi_core.builtin_models"].distribution == "openpi-core"
    assert "native" in infos["openpi_core.builtin_formats"].registered["checkpoint_format"]


def test_registers_and_attributes_items_to_their_plugin():
    manager = PluginManager(entry_points=False, plugins=[("first", plugin_module("first", "jax", "torch"))])
    registry = manager.registry("backend")
    assert registry.names() == ["jax", "torch"]
    assert registry.entries["torch"].plugin == "first"
    (info,) = manager.plugins()
    assert info.registered == {"backend": ["jax", "torch"]} and info.error is None


def test_duplicate_name_names_both_plugins_and_keeps_the_first():
    manager = PluginManager(
        entry_points=False,
        plugins=[("first", plugin_module("first", "jax")), ("second", plugin_module("second", "jax"))],
    )
    assert manager.registry("backend").entries["jax"].plugin == "first"
    failure = {info.name: info for info in manager.plugins()}["second"]
    assert "registered twice" in failure.error and "'first'" in failure.error and "'second'" in failure.error


def test_failed_plugin_rolls_back_its_partial_registrations():
    module = plugin_module("half", "alpha")

    @hookimpl
    def openpi_register_embodiments(register):
        raise RuntimeError("robot driver missing")

    module.openpi_register_embodiments = openpi_register_embodiments
    manager = PluginManager(entry_points=False, plugins=[("half", module)])
    assert manager.registry("backend").names() == []
    assert "robot driver missing" in manager.failures[0].error


def test_misspelled_hook_is_rejected_and_others_still_load():
    bad = types.ModuleType("bad")

    @hookimpl
    def openpi_register_embodiment(register):  # missing the final "s"
        raise AssertionError("must never be called")

    bad.openpi_register_embodiment = openpi_register_embodiment
    manager = PluginManager(entry_points=False, plugins=[("bad", bad), ("good", plugin_module("good", "jax"))])
    failures = {info.name: info.error for info in manager.failures}
    assert "openpi_register_embodiment" in failures["bad"]
    assert manager.registry("backend").names() == ["jax"]


def test_wrong_object_type_is_a_plugin_error():
    module = types.ModuleType("wrong")

    @hookimpl
    def openpi_register_backends(register):
        register("not a backend")

    module.openpi_register_backends = openpi_register_backends
    manager = PluginManager(entry_points=False, plugins=[("wrong", module)])
    assert "expected an instance of AbstractBackend" in manager.failures[0].error


def test_unknown_name_lists_installed_suggests_and_names_distribution():
    manager = PluginManager(entry_points=False, plugins=[("p", plugin_module("p", "jax"))])
    with use_plugin_manager(manager), pytest.raises(UnknownNameError) as info:
        plugins.get_backend("torhc")
    message = str(info.value)
    assert "installed: jax" in message
    with use_plugin_manager(manager), pytest.raises(UnknownNameError) as info:
        plugins.get_backend("torch")
    assert "pip install openpi-backend-torch" in str(info.value)
    with use_plugin_manager(manager), pytest.raises(UnknownNameError) as info:
        plugins.get_backend("jaxx")
    assert "Did you mean 'jax'?" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_loads_lazily_and_once():
    calls = []
    module = types.ModuleType("counting")

    @hookimpl
    def openpi_register_backends(register):
        calls.append(1)
        register(FakeBackend("jax"))

    module.openpi_register_backends = openpi_register_backends
    manager = PluginManager(entry_points=False, plugins=[("counting", module)])
    assert calls == []
    manager.registry("backend")
    manager.registry("embodiment")
    manager.plugins()
    assert calls == [1]


def test_importing_core_loads_no_plugin(monkeypatch):
    monkeypatch.setattr(plugins, "_manager", None)
    import openpi_core  # noqa: F401

    assert plugins._manager is None


def write_entry_point_plugin(tmp_path: Path, dist: str, module_name: str, body: str) -> None:
    """A tiny installed distribution: a module and dist-info with an ``openpi`` entry point."""
    (tmp_path / f"{module_name}.py").write_text(body)
    info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[openpi]\n{module_name} = {module_name}\n")


GOOD_PLUGIN = """
from openpi_core import hookimpl
from openpi_core.specs import AbstractBackend

class B(AbstractBackend):
    name = "fakebackend"
    families = ()
    def load_model(self, path_or_params, config=None):
        raise NotImplementedError

@hookimpl
def openpi_register_backends(register):
    register(B())
"""


@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    write_entry_point_plugin(tmp_path, "good-dist", "goodplug", GOOD_PLUGIN)
    write_entry_point_plugin(tmp_path, "broken-dist", "brokenplug", "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("goodplug", "brokenplug"):
        sys.modules.pop(name, None)


def test_entry_point_plugins_and_import_failures(installed_plugins, monkeypatch):
    monkeypatch.setenv("PI_LOAD_PLUGINS", "goodplug,broken-dist")
    infos = {info.name: info for info in PluginManager().plugins()}
    assert set(infos) == {"goodplug", "brokenplug"}
    assert infos["goodplug"].distribution == "good-dist" and infos["goodplug"].version == "1.2.3"
    assert infos["goodplug"].registered == {"backend": ["fakebackend"]}
    assert "needs libfoo" in infos["brokenplug"].error


def test_disable_plugins_by_distribution_name(installed_plugins, monkeypatch):
    monkeypatch.setenv("PI_LOAD_PLUGINS", "goodplug,brokenplug")
    monkeypatch.setenv("PI_DISABLE_PLUGINS", "broken-dist")
    assert [info.name for info in PluginManager().plugins()] == ["goodplug"]


def test_empty_load_list_loads_nothing(installed_plugins, monkeypatch):
    monkeypatch.setenv("PI_LOAD_PLUGINS", "")
    assert PluginManager().plugins() == []


def test_trace_logs_every_hook_call_and_registration(monkeypatch, caplog):
    monkeypatch.setenv("PI_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.INFO, logger="openpi_core.plugins"):
        PluginManager(entry_points=False, plugins=[("traced", plugin_module("traced", "jax"))]).load()
    assert "calling openpi_register_backends of plugin 'traced'" in caplog.text
    assert "plugin 'traced' registered backend 'jax'" in caplog.text


def test_duplicate_in_registry_raises_plugin_error():
    registry = plugins.Registry("backend", AbstractBackend)
    registry.add(FakeBackend("jax"), "a")
    with pytest.raises(PluginError, match="by plugin 'a' and by plugin 'b'"):
        registry.add(FakeBackend("jax"), "b")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("raise SystemExit('vendor SDK not found')\n", "SystemExit: vendor SDK not found"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ],
    ids=["system-exit-message", "sys-exit-code", "keyboard-interrupt"],
)
def test_plugin_raising_base_exception_at_import_is_reported_by_name(tmp_path, monkeypatch, caplog, body, error):
    write_entry_point_plugin(tmp_path, "good-dist", "goodplug", GOOD_PLUGIN)
    write_entry_point_plugin(tmp_path, "exiting-dist", "exitingplug", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PI_LOAD_PLUGINS", "goodplug,exitingplug")
    try:
        manager = PluginManager()
        with caplog.at_level(logging.WARNING, logger="openpi_core.plugins"):
            infos = {info.name: info for info in manager.plugins()}
    finally:
        for name in ("goodplug", "exitingplug"):
            sys.modules.pop(name, None)
    assert infos["exitingplug"].error == error
    assert infos["exitingplug"].distribution == "exiting-dist" and infos["exitingplug"].registered == {}
    assert [info.name for info in manager.failures] == ["exitingplug"]
    assert f"plugin 'exitingplug' failed to load: {error}" in caplog.text
    assert manager.registry("backend").names() == ["fakebackend"]
    with use_plugin_manager(manager):
        assert plugins.get_backend("fakebackend").name == "fakebackend"


@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt], ids=lambda e: e.__name__)
def test_plugin_raising_base_exception_while_registering_is_rolled_back(exception):
    module = plugin_module("quits", "alpha")

    @hookimpl
    def openpi_register_embodiments(register):
        raise exception("gave up")

    module.openpi_register_embodiments = openpi_register_embodiments
    manager = PluginManager(entry_points=False, plugins=[("quits", module), ("good", plugin_module("good", "jax"))])
    assert manager.registry("backend").names() == ["jax"]
    assert {info.name: info.error for info in manager.failures} == {"quits": f"{exception.__name__}: gave up"}


def test_plugin_raising_system_exit_while_adding_commands_leaves_the_others(caplog):
    quits = types.ModuleType("quits")

    @hookimpl
    def openpi_register_commands(cli):
        raise SystemExit("no commands today")

    quits.openpi_register_commands = openpi_register_commands
    added = []
    good = types.ModuleType("good")

    @hookimpl
    def openpi_register_commands(cli):  # a second, separate plugin
        added.append(cli)

    good.openpi_register_commands = openpi_register_commands
    manager = PluginManager(entry_points=False, plugins=[("quits", quits), ("good", good)])
    with caplog.at_level(logging.WARNING, logger="openpi_core.plugins"):
        manager.add_commands("the cli")
    assert added == ["the cli"]
    assert "plugin 'quits' failed to add commands: SystemExit: no commands today" in caplog.text
