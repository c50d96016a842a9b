"""Plugin loading and the registries of everything plugins offer.

Loading policy, in one place:

* Plugins are modules named by entry points in the ``openpi`` group. They load
  lazily and once: on the first lookup, never at ``import openpi_core``.
* Built-in plugins (listed in :data:`BUILTIN_PLUGINS`) go through the same path.
* ``PI_LOAD_PLUGINS=a,b`` loads only those entry points (by entry-point or
  distribution name; an empty value loads none); ``PI_DISABLE_PLUGINS=a,b`` skips
  those. ``PI_TRACE_PLUGINS=1`` logs every hook call and registration.
* A plugin that fails to import, implements a misspelled hook, or raises while
  registering is recorded in :attr:`PluginManager.failures` and skipped; the rest
  keep working. Any exception counts, ``SystemExit`` and ``KeyboardInterrupt``
  included: a plugin's import must never end the host process.

Tests build their own :class:`PluginManager` with ``entry_points=False`` and the
plugin modules they want, and install it with :func:`use_plugin_manager`.
"""

import contextlib
import difflib
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from openpi_core import PROJECT_NAME, hookspecs
from openpi_core.errors import PluginError, UnknownNameError
from openpi_core.specs import (
    AbstractBackend,
    AbstractCheckpointFormat,
    AbstractEmbodiment,
    Demo,
    ModelSpec,
    NamedConfig,
)

logger = logging.getLogger(__name__)

BUILTIN_PLUGINS: tuple[str, ...] = ("openpi_core.builtin_formats", "openpi_core.builtin_models")
"""Modules inside openpi-core that register through the ordinary hook path."""

KNOWN_DISTRIBUTIONS: dict[str, dict[str, str]] = {
    "backend": {"jax": "openpi-backend-jax", "torch": "openpi-backend-torch"},
    "embodiment": {
        "aloha": "openpi-embodiment-aloha",
        "droid": "openpi-embodiment-droid",
        "libero": "openpi-embodiment-libero",
        "ur5": "openpi-embodiment-ur5",
    },
}
"""Names this project publishes, so a lookup miss can say what to install."""

T = TypeVar("T")


@attrs.frozen
class Registration(Generic[T]):
    """One registered object and the plugin that registered it."""

    item: T
    plugin: str


@attrs.frozen
class PluginInfo:
    """What :func:`pi plugins` shows for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    registered: dict[str, list[str]]
    error: str | None = None


@attrs.define
class Registry(Generic[T]):
    """Objects of one kind by unique name."""

    kind: str
    item_type: type
    entries: dict[str, Registration[T]] = attrs.field(factory=dict)

    def add(self, item: Any, plugin: str) -> None:
        if not isinstance(item, self.item_type):
            raise PluginError(
                f"plugin {plugin!r} registered a {type(item).__name__} as a {self.kind}; "
                f"expected an instance of {self.item_type.__name__}"
            )
        name = item.name
        if name in self.entries:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {self.entries[name].plugin!r} "
                f"and by plugin {plugin!r}"
            )
        self.entries[name] = Registration(item, plugin)

    def get(self, name: str) -> T:
        if name in self.entries:
            return self.entries[name].item
        raise UnknownNameError(unknown_name_message(self.kind, name, sorted(self.entries)))

    def names(self) -> list[str]:
        return sorted(self.entries)


def unknown_name_message(kind: str, name: str, installed: list[str]) -> str:
    """Say that ``name`` is not installed, what is, the closest name and what to install."""
    message = f"no {kind} named {name!r} is installed; installed: {', '.join(installed) or 'none'}."
    close = difflib.get_close_matches(name, installed, n=1)
    if close:
        message += f" Did you mean {close[0]!r}?"
    distribution = KNOWN_DISTRIBUTIONS.get(kind, {}).get(name)
    if distribution:
        message += f" Install it with: pip install {distribution}"
    return message


REGISTRY_HOOKS: dict[str, tuple[str, type]] = {
    "backend": ("openpi_register_backends", AbstractBackend),
    "model": ("openpi_register_models", ModelSpec),
    "embodiment": ("openpi_register_embodiments", AbstractEmbodiment),
    "config": ("openpi_register_configs", NamedConfig),
    "checkpoint_format": ("openpi_register_checkpoint_formats", AbstractCheckpointFormat),
    "demo": ("openpi_register_demos", Demo),
}


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginManager:
    """Loads plugins once and holds one :class:`Registry` per kind.

    Args:
        entry_points: discover plugins from installed entry points (honouring
            ``PI_LOAD_PLUGINS`` and ``PI_DISABLE_PLUGINS``).
        plugins: extra plugin modules (or objects with hook functions), as
            ``(name, module)`` pairs, loaded after the built-ins.
    """

    def __init__(self, *, entry_points: bool = True, plugins: Iterable[tuple[str, Any]] = ()) -> None:
        self._entry_points = entry_points
        self._extra = list(plugins)
        self._lock = threading.RLock()
        self._loaded = False
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registries: dict[str, Registry[Any]] = {
            kind: Registry(kind, item_type) for kind, (_, item_type) in REGISTRY_HOOKS.items()
        }
        self.infos: dict[str, PluginInfo] = {}
        self._trace = os.environ.get("PI_TRACE_PLUGINS", "") not in ("", "0")

    # -- loading -----------------------------------------------------------------

    def load(self) -> None:
        """Import and register every plugin, once. Safe to call repeatedly."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module_name in BUILTIN_PLUGINS:
                self._add_plugin(module_name, lambda m=module_name: importlib.import_module(m), "openpi-core")
            if self._entry_points:
                for entry_point in self._selected_entry_points():
                    dist = entry_point.dist.name if entry_point.dist else None
                    self._add_plugin(entry_point.name, entry_point.load, dist)
            for name, module in self._extra:
                self._add_plugin(name, lambda m=module: m, None)

    def _selected_entry_points(self) -> list[metadata.EntryPoint]:
        only = _env_names("PI_LOAD_PLUGINS")
        disabled = _env_names("PI_DISABLE_PLUGINS") or set()
        selected = []
        for entry_point in metadata.entry_points(group=PROJECT_NAME):
            names = {entry_point.name}
            if entry_point.dist is not None:
                names.add(entry_point.dist.name)
            if only is not None and not names & only:
                continue
            if names & disabled:
                continue
            selected.append(entry_point)
        return sorted(selected, key=lambda ep: ep.name)

    def _add_plugin(self, name: str, load: Callable[[], Any], distribution: str | None) -> None:
        version = _distribution_version(distribution)
        registered: dict[str, list[str]] = {}
        try:
            module = load()
            self.pm.register(module, name=name)
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as error:
                self.pm.unregister(module)
                raise PluginError(f"plugin {name!r} implements a hook that does not exist: {error}") from error
            self._collect(name, registered)
        except BaseException as error:  # even sys.exit at import must never end the host
            with contextlib.suppress(BaseException):
                self._forget(name, registered)
            described = _describe_error(error)
            logger.warning("plugin %r failed to load: %s", name, described)
            self.infos[name] = PluginInfo(name, distribution, version, {}, described)
            return
        self.infos[name] = PluginInfo(name, distribution, version, registered)

    def _collect(self, name: str, registered: dict[str, list[str]]) -> None:
        for kind, (hook_name, _) in REGISTRY_HOOKS.items():
            function = _hook_function(self.pm, hook_name, name)
            if function is None:
                continue
            registry = self.registries[kind]

            def register(item: Any, registry: Registry[Any] = registry, kind: str = kind) -> None:
                registry.add(item, name)
                registered.setdefault(kind, []).append(item.name)
                if self._trace:
                    logger.info("plugin %r registered %s %r", name, kind, item.name)

            if self._trace:
                logger.info("calling %s of plugin %r", hook_name, name)
            function(register=register)

    def _forget(self, name: str, registered: Mapping[str, list[str]]) -> None:
        for kind, names in registered.items():
            for item_name in names:
                entry = self.registries[kind].entries.get(item_name)
                if entry is not None and entry.plugin == name:
                    del self.registries[kind].entries[item_name]
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)

    # -- queries -----------------------------------------------------------------

    def registry(self, kind: str) -> Registry[Any]:
        self.load()
        return self.registries[kind]

    def plugins(self) -> list[PluginInfo]:
        """Every plugin that was tried, failed ones included, sorted by name."""
        self.load()
        return [self.infos[name] for name in sorted(self.infos)]

    @property
    def failures(self) -> list[PluginInfo]:
        return [info for info in self.plugins() if info.error is not None]

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add its ``pi`` subcommands to ``cli``."""
        self.load()
        for plugin_name in sorted(self.infos):
            function = _hook_function(self.pm, "openpi_register_commands", plugin_name)
            if function is None:
                continue
            if self._trace:
                logger.info("calling openpi_register_commands of plugin %r", plugin_name)
            try:
                function(cli=cli)
            except BaseException as error:  # as in _add_plugin
                logger.warning("plugin %r failed to add commands: %s", plugin_name, _describe_error(error))


def _hook_function(pm: pluggy.PluginManager, hook_name: str, plugin_name: str) -> Callable[..., Any] | None:
    """The implementation of ``hook_name`` by plugin ``plugin_name``, if it has one.

    Hooks are called one plugin at a time so every registration is attributed to
    the plugin that made it.
    """
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        if impl.plugin_name == plugin_name:
            return impl.function
    return None


def _describe_error(error: BaseException) -> str:
    """``Type: message``, or ``Type`` alone when the message is empty (a bare ``KeyboardInterrupt``)."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _distribution_version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (not yet loaded) on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


@contextlib.contextmanager
def use_plugin_manager(manager: PluginManager) -> Iterator[PluginManager]:
    """Make ``manager`` the process-wide one inside the ``with`` block."""
    global _manager
    with _manager_lock:
        previous, _manager = _manager, manager
    try:
        yield manager
    finally:
        with _manager_lock:
            _manager = previous


def get_backend(name: str) -> AbstractBackend:
    """The installed backend called ``name`` (``jax``, ``torch``)."""
    return get_plugin_manager().registry("backend").get(name)


def get_model_spec(family: str) -> ModelSpec:
    """The installed model family called ``family`` (``pi0``, ``pi05``, ``pi0_fast``)."""
    return get_plugin_manager().registry("model").get(family)


def get_embodiment(name: str) -> AbstractEmbodiment:
    """The installed embodiment called ``name`` (``aloha``, ``droid``, …)."""
    return get_plugin_manager().registry("embodiment").get(name)


def get_config(name: str) -> NamedConfig:
    """The installed named preset called ``name``."""
    return get_plugin_manager().registry("config").get(name)


def get_checkpoint_format(name: str) -> AbstractCheckpointFormat:
    """The installed checkpoint format called ``name``."""
    return get_plugin_manager().registry("checkpoint_format").get(name)


def names(kind: str) -> list[str]:
    """Sorted names of everything of ``kind`` that is installed."""
    return get_plugin_manager().registry(kind).names()
