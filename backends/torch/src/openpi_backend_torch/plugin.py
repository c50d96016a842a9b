"""Entry point of ``openpi-backend-torch``: registers the ``torch`` backend.

Kept free of torch imports so loading plugins stays fast.
"""

from collections.abc import Callable
from typing import Any

import openpi_core
from openpi_backend_torch.backend import TorchBackend


@openpi_core.hookimpl
def openpi_register_backends(register: Callable[[Any], None]) -> None:
    register(TorchBackend())
