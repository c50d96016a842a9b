"""The hooks a plugin can implement. Each docstring is that hook's contract.

A plugin is a module named by an entry point in the ``openpi`` group. It
implements any of these hooks with ``@openpi_core.hookimpl``; every hook receives
a ``register`` callable and calls it once per object it offers. The host owns
the registries: it rejects duplicate names and objects of the wrong type, and
records which plugin registered what.
"""

from collections.abc import Callable
from typing import Any

import pluggy

from openpi_core import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def openpi_register_backends(register: Callable[[Any], None]) -> None:
    """Register numerical backends.

    Call ``register(backend)`` with an instance of
    :class:`openpi_core.specs.AbstractBackend` for each backend. A backend lists
    in ``families`` only the model families it can really build.
    """


@hookspec
def openpi_register_models(register: Callable[[Any], None]) -> None:
    """Register model families.

    Call ``register(spec)`` with a :class:`openpi_core.specs.ModelSpec` for each
    family (``pi0``, ``pi05``, ``pi0_fast``, or a new one).
    """


@hookspec
def openpi_register_embodiments(register: Callable[[Any], None]) -> None:
    """Register robots.

    Call ``register(embodiment)`` with an instance of
    :class:`openpi_core.specs.AbstractEmbodiment` for each robot.
    """


@hookspec
def openpi_register_configs(register: Callable[[Any], None]) -> None:
    """Register named presets.

    Call ``register(config)`` with a :class:`openpi_core.specs.NamedConfig` for each
    preset (``pi0_aloha_sim``, ``pi05_droid``, …).
    """


@hookspec
def openpi_register_checkpoint_formats(register: Callable[[Any], None]) -> None:
    """Register weight importers and exporters.

    Call ``register(fmt)`` with an instance of
    :class:`openpi_core.specs.AbstractCheckpointFormat` for each on-disk format.
    """


@hookspec
def openpi_register_demos(register: Callable[[Any], None]) -> None:
    """Register demonstrations for ``pi demo``.

    Call ``register(demo)`` with a :class:`openpi_core.specs.Demo` for each, such as
    a trained policy driving a simulated robot. ``pi demo`` runs the first one by name
    whose ``missing()`` is None; with none (or ``--no-sim``) it measures the serving
    path with the random-weight demo checkpoint instead. Import the simulator inside
    ``run`` and ``missing``, not at plugin import time.
    """


@hookspec
def openpi_register_commands(cli: Any) -> None:
    """Add subcommands to the ``pi`` command.

    ``cli`` is the top-level ``click.Group``; add commands with ``cli.add_command``
    or the ``@cli.command()`` decorator. Import heavy modules inside the command
    functions, not at plugin import time.
    """
