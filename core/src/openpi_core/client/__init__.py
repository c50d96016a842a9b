"""The robot side of serving: a websocket policy client, an action-chunk broker, a real-time executor and image helpers.

Needs ``openpi-core`` alone (numpy, msgpack, websockets): this is what runs on the
robot computer. The protocol is documented in :mod:`openpi_core.wire`.
"""

from openpi_core.client.action_chunk_broker import ActionChunkBroker
from openpi_core.client.realtime import ExecutorStats, RealTimeExecutor, StepRecord
from openpi_core.client.websocket_client import ServerError, ServerUnavailableError, WebsocketClientPolicy

__all__ = [
    "ActionChunkBroker",
    "ExecutorStats",
    "RealTimeExecutor",
    "ServerError",
    "ServerUnavailableError",
    "StepRecord",
    "WebsocketClientPolicy",
]
