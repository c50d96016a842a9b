"""Serving a policy to robots over websockets: the server, its batching and its metrics.

The protocol itself is documented in :mod:`openpi_core.wire`; the robot side lives
in :mod:`openpi_core.client`.
"""

from openpi_core.serving.batcher import PolicyRunError
from openpi_core.serving.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    BackgroundServer,
    PolicyServer,
    ServablePolicy,
    ServerConfig,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "BackgroundServer",
    "PolicyRunError",
    "PolicyServer",
    "ServablePolicy",
    "ServerConfig",
]
