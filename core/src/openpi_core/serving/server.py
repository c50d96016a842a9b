"""The websocket policy server: serves any :class:`ServablePolicy` to robots over :mod:`openpi_core.wire`.

One asyncio event loop owns the sockets, decoding and encoding; two worker threads
own the policy: one calls ``prepare`` (and ``batch_key``) for one observation at a
time, the other calls ``run`` (and ``warmup``) for one batch at a time, so neither
is ever called concurrently with itself, but a ``prepare`` may overlap a ``run``.
:mod:`~openpi_core.serving.batcher` decides which requests share a ``run`` call.

Lifecycle: :meth:`PolicyServer.start` binds the port, then warms the policy up in
the background (``/healthz`` answers at once; ``/readyz`` and robot handshakes answer
503 until warm-up is done). :meth:`PolicyServer.stop` stops admitting requests,
answers those in flight, then closes every connection with code 1001.
:meth:`PolicyServer.run` does all of it in the foreground until SIGTERM or SIGINT;
:class:`BackgroundServer` runs it on a thread of its own, beside a robot client
in the same process.

Every refused request is logged in one line (with its traceback only when the
server is at fault); what the robot receives is described in :mod:`openpi_core.wire`.

Bounds: at most ``max_connections`` robots at once (more are refused at the
handshake with HTTP 503), at most ``recv_queue`` received frames buffered per
connection before the server stops reading from it, at most ``max_queue`` requests
being prepared or waiting for the model (more are refused with 1013, "busy"), and a
request whose robot has disconnected is dropped before it is prepared or computed.
So the memory held for robots' frames is bounded by about
``max_connections * (recv_queue + 3) * max_message_bytes`` (per connection: the
queued frames, one being received, and one being answered with its decoded arrays).
No reply carries a non-finite number: such an answer is refused with 1011.
"""

import asyncio
import concurrent.futures
import ctypes
import http
import ipaddress
import logging
import os
import select
import signal
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np
from websockets.asyncio.server import Request, Response, Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from openpi_core import wire
from openpi_core.errors import InputError, OpenpiError
from openpi_core.serving.batcher import Batcher, PolicyRunError, RequestAbandoned
from openpi_core.serving.metrics import CONTENT_TYPE, ServerMetrics
from openpi_core.wire import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_RECV_QUEUE,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServablePolicy(Protocol):
    """What the server needs from a policy (``openpi_core.policy.Policy`` is one).

    A policy may also have ``warmup()``; the server calls it once on the model
    thread before admitting robots (compile, allocate, load caches).
    """

    metadata: dict
    """Sent to every robot as the first frame (merged under :attr:`ServerConfig.metadata`)."""

    def prepare(self, observation: dict) -> Any:
        """Validate and transform ONE observation; raises ``InputError`` on bad input."""

    def run(self, prepared: list[Any]) -> list[dict]:
        """ONE model call over prepared items; one result dict (``actions``, …) per item, in order."""

    def batch_key(self, prepared: Any) -> Hashable:
        """Items with equal keys can be stacked into one ``run`` call."""


def _api_key_from_env() -> str | None:
    return os.environ.get(wire.API_KEY_ENV) or None


@attrs.frozen
class ServerConfig:
    """How a :class:`PolicyServer` listens and batches.

    Attributes:
        host: interface to bind; the loopback default only admits this computer,
            ``"0.0.0.0"`` admits robots on the network.
        port: TCP port; 0 picks a free one (see :attr:`PolicyServer.port`).
        api_key: when set, handshakes must carry ``Authorization: Api-Key <key>``.
            Defaults to the ``OPENPI_API_KEY`` environment variable, if set.
        max_batch: the most observations per ``policy.run`` call; 1 turns batching off.
        batch_window_ms: how long the oldest waiting observation may wait for others
            to share its call (only when ``max_batch > 1``).
        max_message_bytes: the largest observation frame accepted (see
            :data:`DEFAULT_MAX_MESSAGE_BYTES`); larger ones close the connection with 1009.
        max_connections: the most robots connected at once; further handshakes get
            HTTP 503 (clients retry).
        max_queue: the most requests being prepared or waiting for the model at once;
            a request beyond it is refused with close code 1013 (busy, retry later).
        recv_queue: received frames buffered per connection before the server stops
            reading from its socket (websockets' high-water mark).
        metadata: extra entries for the metadata frame, over the policy's own.
        shutdown_timeout_s: how long :meth:`PolicyServer.stop` waits for requests in flight.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=[attrs.validators.ge(0), attrs.validators.le(65535)])
    api_key: str | None = attrs.field(factory=_api_key_from_env)
    max_batch: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    batch_window_ms: float = attrs.field(default=2.0, validator=attrs.validators.ge(0.0))
    max_message_bytes: int = attrs.field(default=DEFAULT_MAX_MESSAGE_BYTES, validator=attrs.validators.ge(1))
    max_connections: int = attrs.field(default=DEFAULT_MAX_CONNECTIONS, validator=attrs.validators.ge(1))
    max_queue: int = attrs.field(default=DEFAULT_MAX_QUEUE, validator=attrs.validators.ge(1))
    recv_queue: int = attrs.field(default=DEFAULT_RECV_QUEUE, validator=attrs.validators.ge(1))
    metadata: dict = attrs.field(factory=dict)
    shutdown_timeout_s: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))


class _Refusal(OpenpiError):
    """A request the server answers with an error text frame and a close code."""

    def __init__(self, kind: str, code: int, error: BaseException) -> None:
        super().__init__(wire.error_text(error))
        self.kind = kind
        self.code = code


class PolicyServer:
    """Serves ``policy`` over websockets as described in :mod:`openpi_core.wire`.

    Attributes:
        metrics: what ``GET /metrics`` reports.
        port: the bound port once :meth:`start` returned, else None.
    """

    def __init__(self, policy: ServablePolicy, config: ServerConfig | None = None) -> None:
        self.policy = policy
        self.config = config if config is not None else ServerConfig()
        self.metrics = ServerMetrics()
        self.port: int | None = None
        self._metadata_frame = wire.pack({**policy.metadata, **self.config.metadata})
        self._ready = False
        self._stopping = False
        self._warmup_error: BaseException | None = None
        self._in_flight = 0
        self._queued = 0
        # Connections admitted by the handshake check, until closed (weak: a failed handshake leaves no trace).
        self._admitted: weakref.WeakSet[ServerConnection] = weakref.WeakSet()
        self._server: Server | None = None
        self._batcher: Batcher | None = None
        self._warmup: asyncio.Task | None = None
        self._idle: asyncio.Event | None = None
        self._prepare_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._model_thread: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def ready(self) -> bool:
        """Warm-up finished and the server admits robots."""
        return self._ready and not self._stopping

    async def start(self) -> None:
        """Bind and listen, then warm the policy up in the background; returns once listening."""
        # Robots are admitted only once warm-up is done, so everything below may follow the bind.
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            compression=None,
            max_size=self.config.max_message_bytes,
            max_queue=self.config.recv_queue,
            process_request=self._process_request,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._idle = asyncio.Event()
        self._idle.set()
        self._prepare_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="openpi-prepare")
        self._model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="openpi-model")
        self._batcher = Batcher(
            self.policy.run,
            self._model_thread,
            max_batch=self.config.max_batch,
            batch_window_ms=self.config.batch_window_ms,
            on_batch=self.metrics.batch_size.observe,
        )
        self._batcher.start()
        self._log_startup()
        self._warmup = asyncio.get_running_loop().create_task(self._warm_up(), name="openpi-warmup")

    async def wait_ready(self) -> None:
        """Wait until warm-up has finished.

        Raises:
            Exception: whatever the policy's ``warmup`` raised.
        """
        if self._warmup is None:
            raise OpenpiError("the server has not been started")
        await asyncio.shield(self._warmup)
        if self._warmup_error is not None:
            raise self._warmup_error

    async def stop(self) -> None:
        """Stop gracefully: refuse new requests, answer those in flight, then close every connection."""
        if self._server is None or self._stopping:
            return
        self._stopping = True
        logger.info("stopping: answering %d request(s) in flight", self._in_flight)
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.shutdown_timeout_s)
        except TimeoutError:
            logger.warning(
                "%d request(s) still in flight after %.0f s; closing anyway",
                self._in_flight,
                self.config.shutdown_timeout_s,
            )
        self._server.close()
        await self._server.wait_closed()
        await self._batcher.close()
        self._warmup.cancel()
        for executor in (self._prepare_thread, self._model_thread):
            executor.shutdown(wait=False, cancel_futures=True)
        logger.info("stopped")

    def run(self) -> None:
        """Serve in the foreground until SIGTERM or SIGINT, then stop gracefully.

        The server then owns the process, so on glibc it also has freed frame buffers
        go back to the operating system (:func:`return_large_buffers_to_os`).

        Raises:
            Exception: whatever the policy's ``warmup`` raised (after stopping).
        """
        return_large_buffers_to_os()
        asyncio.run(self._serve_until_signal())

    async def _serve_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signalled.set)
        await self.start()
        try:
            await self._until_signal_or_failed_warmup(signalled)
            logger.info("shutdown signal received")
        finally:
            await self.stop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _until_signal_or_failed_warmup(self, signalled: asyncio.Event) -> None:
        signal_wait = asyncio.ensure_future(signalled.wait())
        ready_wait = asyncio.ensure_future(self.wait_ready())
        await asyncio.wait((signal_wait, ready_wait), return_when=asyncio.FIRST_COMPLETED)
        if ready_wait.done():
            ready_wait.result()
        else:
            ready_wait.cancel()
        await signal_wait

    async def _warm_up(self) -> None:
        warmup = getattr(self.policy, "warmup", None)
        if warmup is not None:
            logger.info("warming the policy up")
            start = time.monotonic()
            try:
                await asyncio.get_running_loop().run_in_executor(self._model_thread, warmup)
            except Exception as error:
                logger.exception("warm-up failed; the server will not admit robots")
                self._warmup_error = error
                return
            logger.info("warm-up done in %.1f s", time.monotonic() - start)
        self._ready = True
        logger.info("ready")

    def _log_startup(self) -> None:
        config = self.config
        logger.info(
            "serving on ws://%s:%d (max_batch %d, batch window %.1f ms, max message %.1f MiB, "
            "max %d connections, max %d queued requests, %s)",
            config.host,
            self.port,
            config.max_batch,
            config.batch_window_ms,
            config.max_message_bytes / 2**20,
            config.max_connections,
            config.max_queue,
            "API key required" if config.api_key else "no API key",
        )
        if _is_loopback(config.host):
            logger.info("only this computer can connect; use --host 0.0.0.0 to accept robots on the network")
        elif not config.api_key:
            logger.warning(
                "listening on %s without an API key: anyone who reaches this port can drive the policy; set %s",
                config.host,
                wire.API_KEY_ENV,
            )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urllib.parse.urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(http.HTTPStatus.OK, "ready\n")
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, self._not_ready_reason())
        if path == "/metrics":
            response = connection.respond(http.HTTPStatus.OK, self.metrics.render())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = CONTENT_TYPE
            return response
        if self.config.api_key is not None:
            given = request.headers.get_all(wire.API_KEY_HEADER)
            if len(given) != 1 or not wire.api_key_matches(given[0], self.config.api_key):
                self.metrics.errors.inc("unauthorized")
                logger.warning("refused a handshake from %s: missing or wrong API key", connection.remote_address)
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED, f"missing or wrong '{wire.API_KEY_HEADER}: Api-Key <key>' header\n"
                )
        if not self.ready:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, self._not_ready_reason())
        admitted = sum(other.state is not State.CLOSED for other in self._admitted)
        if admitted >= self.config.max_connections:
            self.metrics.errors.inc("too_many_connections")
            logger.warning(
                "refused a handshake from %s: %d robots are connected already (--max-connections)",
                connection.remote_address,
                self.config.max_connections,
            )
            return connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"server is full: {self.config.max_connections} robots are connected; retry later\n",
            )
        self._admitted.add(connection)
        return None

    def _not_ready_reason(self) -> str:
        if self._stopping:
            return "server is shutting down\n"
        if self._warmup_error is not None:
            return f"warm-up failed: {wire.error_text(self._warmup_error)}\n"
        return "policy is warming up\n"

    async def _handle(self, connection: ServerConnection) -> None:
        peer = connection.remote_address
        logger.info("connection from %s opened", peer)
        self.metrics.connections.add(1)
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await connection.send(self._metadata_frame)
            prev_total_ms: float | None = None
            while True:
                message = await connection.recv()
                if self._stopping:
                    await connection.close(wire.CLOSE_GOING_AWAY, "server is shutting down")
                    return
                arrival = time.monotonic()
                self._begin_request()
                try:
                    answer = await self._answer_unless_gone(message, prev_total_ms, connection, closed)
                    del message
                    if answer is None:
                        connection.transport.abort()
                        return
                    await connection.send(answer)
                except _Refusal as refusal:
                    await self._refuse(connection, refusal)
                    return
                finally:
                    self._end_request(arrival)
                prev_total_ms = (time.monotonic() - arrival) * 1000.0
        except ConnectionClosed as closed_error:
            if closed_error.sent is not None and closed_error.sent.code == wire.CLOSE_TOO_BIG:
                self.metrics.errors.inc("too_big")
                logger.warning("closed the connection from %s: %s", peer, closed_error.sent.reason)
        finally:
            closed.cancel()
            self.metrics.connections.add(-1)
            logger.info("connection from %s closed", peer)

    async def _answer_unless_gone(
        self, message: bytes | str, prev_total_ms: float | None, connection: ServerConnection, closed: asyncio.Future
    ) -> bytes | None:
        """:meth:`_answer`, abandoned (None) once the robot has disconnected.

        A robot is gone when its connection closed, or when its socket reports a hang-up
        (seen even while the server is not reading from it, as when its frames queue up).
        The request is then dropped from the prepare thread's queue and from the
        batcher, so a robot that left costs no model time.
        """
        if self._queued >= self.config.max_queue:
            self.metrics.requests.inc()
            error = OpenpiError(f"server is busy: {self._queued} requests are queued (--max-queue); retry later")
            raise _Refusal("busy", wire.CLOSE_TRY_AGAIN_LATER, error)
        self._queued += 1
        try:

            def alive() -> bool:
                return not closed.done() and not _hung_up(connection)

            answer = asyncio.ensure_future(self._answer(message, prev_total_ms, alive))
            while not answer.done() and alive():
                await asyncio.wait((answer, closed), timeout=_HANG_UP_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            if answer.done() and not isinstance(answer.exception(), RequestAbandoned):
                return answer.result()
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)
            self.metrics.errors.inc("abandoned")
            return None
        finally:
            self._queued -= 1

    async def _answer(self, message: bytes | str, prev_total_ms: float | None, alive: Callable[[], bool]) -> bytes:
        """The packed answer to one message; raises :class:`_Refusal` when it must be refused,
        :class:`RequestAbandoned` when ``alive()`` says the robot left before the work began."""
        self.metrics.requests.inc()
        start = time.monotonic()
        if isinstance(message, str):
            error = wire.WireError("expected a binary frame holding a msgpack observation, got a text frame")
            raise _Refusal("bad_message", wire.CLOSE_POLICY_VIOLATION, error)
        try:
            observation = wire.unpack_observation(message)
        except wire.WireError as error:
            raise _Refusal("bad_message", wire.CLOSE_POLICY_VIOLATION, error) from error
        loop = asyncio.get_running_loop()
        try:
            prepared, key = await loop.run_in_executor(self._prepare_thread, self._prepare, observation, alive)
        except RequestAbandoned:
            raise
        except InputError as error:
            raise _Refusal("input", wire.CLOSE_POLICY_VIOLATION, error) from error
        except Exception as error:
            raise _Refusal("internal", wire.CLOSE_INTERNAL_ERROR, error) from error
        try:
            result = await self._batcher.submit(prepared, key, alive)
        except PolicyRunError as error:
            raise _Refusal("internal", wire.CLOSE_INTERNAL_ERROR, error) from error
        if (where := _non_finite(result)) is not None:
            error = OpenpiError(f"the policy answered a non-finite value in {where}; refusing to send it to the robot")
            raise _Refusal("non_finite_output", wire.CLOSE_INTERNAL_ERROR, error)
        timing = {"infer_ms": (time.monotonic() - start) * 1000.0}
        if prev_total_ms is not None:
            timing["prev_total_ms"] = prev_total_ms
        try:
            return wire.pack({**result, "server_timing": timing})
        except wire.WireError as error:
            raise _Refusal("internal", wire.CLOSE_INTERNAL_ERROR, error) from error

    def _prepare(self, observation: dict, alive: Callable[[], bool]) -> tuple[Any, Hashable]:
        if not alive():
            raise RequestAbandoned("the robot left before its request was prepared")
        prepared = self.policy.prepare(observation)
        return prepared, self.policy.batch_key(prepared)

    async def _refuse(self, connection: ServerConnection, refusal: _Refusal) -> None:
        self.metrics.errors.inc(refusal.kind)
        server_fault = refusal.code == wire.CLOSE_INTERNAL_ERROR
        logger.log(
            logging.ERROR if server_fault else logging.WARNING,
            "refused a request from %s: %s",
            connection.remote_address,
            refusal,
            exc_info=(refusal.__cause__ or refusal) if server_fault else None,
        )
        text = str(refusal)
        try:
            await connection.send(text)
            await connection.close(refusal.code, wire.close_reason(text))
        except ConnectionClosed:
            pass

    def _begin_request(self) -> None:
        self._in_flight += 1
        self.metrics.in_flight.add(1)
        self._idle.clear()

    def _end_request(self, arrival: float) -> None:
        self._in_flight -= 1
        self.metrics.in_flight.add(-1)
        self.metrics.latency.observe(time.monotonic() - arrival)
        if self._in_flight == 0:
            self._idle.set()


class BackgroundServer:
    """A :class:`PolicyServer` on its own event-loop thread, for a server and a robot in one process.

    Use it as a context manager (demos, tests)::

        with BackgroundServer(policy, ServerConfig(port=0)) as background:
            client = WebsocketClientPolicy(port=background.server.port)

    Entering starts the server and, with ``wait_ready``, waits for its warm-up
    (raising what warm-up raised); leaving stops it gracefully and ends the thread.
    """

    def __init__(self, policy: ServablePolicy, config: ServerConfig | None = None, *, wait_ready: bool = True) -> None:
        self.server = PolicyServer(policy, config)
        self._wait_ready = wait_ready
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openpi-server", daemon=True)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the server's loop and return its result (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop the server gracefully (see :meth:`PolicyServer.stop`); idempotent."""
        if self._thread.is_alive():
            self.call(self.server.stop())

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        try:
            self.call(self.server.start())
            if self._wait_ready:
                self.call(self.server.wait_ready())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


def _non_finite(tree: Any, path: str = "") -> str | None:
    """The key path of the first float array or number in ``tree`` that is NaN or infinite, else None."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if (found := _non_finite(value, f"{path}/{key}" if path else str(key))) is not None:
                return found
        return None
    if isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            if (found := _non_finite(value, f"{path}[{index}]")) is not None:
                return found
        return None
    if isinstance(tree, float | np.floating | np.ndarray) and np.asarray(tree).dtype.kind in "fc":
        return None if np.all(np.isfinite(tree)) else repr(path)
    return None


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BUFFER_BYTES = 256 * 1024
"""Allocations of this size or more get their own memory map once
:func:`return_large_buffers_to_os` ran."""


def return_large_buffers_to_os() -> bool:
    """Make glibc give every allocation of :data:`LARGE_BUFFER_BYTES` or more its own memory
    map, released to the operating system when freed; True where that was done (glibc).

    By default glibc raises that threshold to the largest block freed so far, so after a
    few 4 MiB frames every later frame comes from the heap, whose freed memory the
    process keeps: the server's resident memory then stays at its peak after an attack.
    This changes the whole process's allocator; call it only in a process the server owns.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    except (OSError, AttributeError):
        return False


_HANG_UP_POLL_S = 0.05
"""How often a waiting request asks whether its robot's socket hung up."""

# Linux reports a peer's hang-up (FIN) as POLLRDHUP even behind unread data; elsewhere
# only a reset (POLLERR) or a full hang-up (POLLHUP) is seen.
_HANG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


def _hung_up(connection: ServerConnection) -> bool:
    """Whether the robot's end of ``connection`` hung up, asking its socket (not the websocket,
    which does not read while its received frames are queued)."""
    sock = connection.transport.get_extra_info("socket") if connection.transport is not None else None
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), _HANG_UP)
    return bool(poller.poll(0))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
