"""The robot side of :mod:`openpi_core.wire`: a policy whose ``infer`` asks a policy server.

:class:`WebsocketClientPolicy` has openpi's client API (``infer``, ``get_server_metadata``,
``reset``) and works against openpi's server as well as ours. It is synchronous,
one request at a time: use one client per thread.

Connecting waits for the server (it may still be loading or warming up a model),
retrying every ``retry_interval_s`` until ``wait_timeout_s``. When the server refuses
a request, :meth:`WebsocketClientPolicy.infer` raises :class:`ServerError` with the
server's one-line error text and close code; the next call reconnects, so a robot
survives a bad observation or a server restart.
"""

import contextlib
import logging
import os
import time

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect

from openpi_core import wire
from openpi_core.errors import OpenpiError

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 10.0
# How long to wait for the close frame that follows an error text frame.
_CLOSE_WAIT_S = 5.0


class ServerError(OpenpiError):
    """The server refused a request or the connection.

    ``str(error)`` is the server's one-line error text (or the close reason, or the
    HTTP body of a refused handshake).

    Attributes:
        code: the websocket close code (1008: the request was at fault, 1009: too big,
            1011: the server failed, 1013: the server is busy, back off and send a fresh
            observation, 1001: it is shutting down), the HTTP status of a refused
            handshake (401: wrong API key), or None when the connection was lost.
    """

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class ServerUnavailableError(OpenpiError, ConnectionError):
    """No server admitted the connection within the wait timeout."""


class WebsocketClientPolicy:
    """A policy served elsewhere, as openpi's ``WebsocketClientPolicy``.

    Args:
        host: server host name or address, or a full ``ws://`` / ``wss://`` URI.
        port: appended to the URI when not None.
        api_key: sent as ``Authorization: Api-Key <key>``; defaults to the
            ``OPENPI_API_KEY`` environment variable, if set.
        wait_timeout_s: how long to keep retrying to connect before raising
            :class:`ServerUnavailableError`.
        retry_interval_s: pause between connection attempts.
        request_timeout_s: how long to wait for one answer (None: forever).

    Raises:
        ServerUnavailableError: no server admitted us within ``wait_timeout_s``.
        ServerError: the server refused the handshake for good (HTTP 401: wrong key).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = 8000,
        api_key: str | None = None,
        *,
        wait_timeout_s: float = 300.0,
        retry_interval_s: float = 1.0,
        request_timeout_s: float | None = 60.0,
    ) -> None:
        self._uri = host if host.startswith(("ws://", "wss://")) else f"ws://{host}"
        if port is not None:
            self._uri += f":{port}"
        api_key = api_key if api_key is not None else os.environ.get(wire.API_KEY_ENV) or None
        self._headers = wire.api_key_header(api_key) if api_key else None
        self._wait_timeout_s = wait_timeout_s
        self._retry_interval_s = retry_interval_s
        self._request_timeout_s = request_timeout_s
        self._connection: ClientConnection | None = None
        self._metadata: dict = {}
        self._connect()

    def get_server_metadata(self) -> dict:
        """The metadata dict the server sent when we (last) connected."""
        return self._metadata

    def infer(self, obs: dict) -> dict:
        """Send one observation, return the server's answer (``actions``, ``server_timing``, …).

        Raises:
            ServerError: the server refused the request (see :attr:`ServerError.code`),
                closed the connection, or did not answer within ``request_timeout_s``.
            openpi_core.wire.WireError: ``obs`` holds something the protocol cannot carry.
        """
        message = wire.pack(obs)
        if self._connection is None or self._connection.state is not State.OPEN:
            self._connect()
        connection = self._connection
        try:
            connection.send(message)
            answer = connection.recv(timeout=self._request_timeout_s)
        except TimeoutError as error:
            self._disconnect()
            raise ServerError(f"no answer from {self._uri} within {self._request_timeout_s} s", code=None) from error
        except ConnectionClosed as closed:
            self._disconnect()
            raise _closed_error(closed) from closed
        if isinstance(answer, str):
            code = _wait_for_close_code(connection)
            self._disconnect()
            raise ServerError(answer, code=code)
        return wire.unpack(answer)

    def reset(self) -> None:
        """Nothing to reset: the server keeps no per-robot state between requests."""

    def close(self) -> None:
        """Close the connection (a later :meth:`infer` reconnects)."""
        self._disconnect()

    def __enter__(self) -> "WebsocketClientPolicy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> None:
        self._disconnect()
        start = time.monotonic()
        last_log = -_LOG_EVERY_S
        while True:
            try:
                connection = self._open()
            except InvalidStatus as refused:
                status = refused.response.status_code
                reason = refused.response.body.decode(errors="replace").strip() or f"HTTP {status}"
                if status != 503:
                    raise ServerError(
                        f"{self._uri} refused the connection: HTTP {status}: {reason}", code=status
                    ) from refused
            except (OSError, InvalidHandshake) as error:
                reason = f"{type(error).__name__}: {error}"
            else:
                if self._receive_metadata(connection):
                    logger.info("connected to %s", self._uri)
                    return
                reason = "the server closed the connection before sending its metadata"
            elapsed = time.monotonic() - start
            if elapsed + self._retry_interval_s > self._wait_timeout_s:
                raise ServerUnavailableError(
                    f"no server admitted us at {self._uri} within {self._wait_timeout_s} s ({reason})"
                )
            if elapsed - last_log >= _LOG_EVERY_S:
                logger.info("waiting for the server at %s (%s)", self._uri, reason)
                last_log = elapsed
            time.sleep(self._retry_interval_s)

    def _open(self) -> ClientConnection:
        connection = connect(self._uri, compression=None, max_size=None, additional_headers=self._headers)
        # websockets >= 17.1 wants connect() used in a with-block; entering it by hand keeps
        # one long-lived connection without a deprecation warning on every version.
        return connection.__enter__()

    def _receive_metadata(self, connection: ClientConnection) -> bool:
        """Read the metadata frame; False when the server closed first (it is shutting down)."""
        try:
            frame = connection.recv(timeout=self._request_timeout_s)
        except ConnectionClosed:
            connection.close()
            return False
        except TimeoutError as error:
            connection.close()
            raise ServerError(f"{self._uri} sent no metadata within {self._request_timeout_s} s", code=None) from error
        if isinstance(frame, str):
            connection.close()
            raise ServerError(f"expected the server's metadata frame, got text: {frame}", code=None)
        self._connection = connection
        self._metadata = wire.unpack(frame)
        return True

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _closed_error(closed: ConnectionClosed) -> ServerError:
    if closed.rcvd is None:
        return ServerError("connection to the server lost", code=None)
    return ServerError(
        closed.rcvd.reason or f"server closed the connection with code {closed.rcvd.code}", closed.rcvd.code
    )


def _wait_for_close_code(connection: ClientConnection) -> int | None:
    """The close code that follows an error text frame (None if none comes in time)."""
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        connection.recv(timeout=_CLOSE_WAIT_S)
    return connection.close_code
