"""Built-in plugin: the checkpoint formats of :mod:`openpi_core.checkpoints`.

Registered through the ordinary hook path, so ``pi plugins`` lists them and a
third-party format sits beside them on equal terms.
"""

from collections.abc import Callable
from typing import Any

from openpi_core import hookimpl
from openpi_core.checkpoints.formats import BUILTIN_FORMATS


@hookimpl
def openpi_register_checkpoint_formats(register: Callable[[Any], None]) -> None:
    for checkpoint_format in BUILTIN_FORMATS:
        register(checkpoint_format)
