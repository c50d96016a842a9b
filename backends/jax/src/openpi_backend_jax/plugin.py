"""Entry point of the ``openpi`` plugin group: registers the ``jax`` backend.

Imported eagerly by the plugin manager, so it imports neither jax nor equinox.
"""

from collections.abc import Callable
from typing import Any

import openpi_core
from openpi_backend_jax.backend import JaxBackend


@openpi_core.hookimpl
def openpi_register_backends(register: Callable[[Any], None]) -> None:
    register(JaxBackend())
