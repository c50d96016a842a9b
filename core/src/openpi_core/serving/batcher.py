"""Dynamic batching: many connections' prepared observations, one model call.

Contract:
- :meth:`Batcher.submit` takes one prepared observation and its batch key and
  returns (awaits) that observation's own result dict.
- Requests are served in arrival order. The oldest waiting request opens a batch;
  the batch takes every waiting request with the same key, in arrival order, up to
  ``max_batch``. While it holds fewer than ``max_batch``, the batch waits for more
  until ``batch_window_ms`` after the oldest request's arrival. Requests with other
  keys wait for a later batch. With ``max_batch == 1`` every request is its own call
  and nothing waits.
- ``policy.run`` runs on one dedicated worker thread, so the event loop keeps
  serving while the model computes and the model is never called concurrently.
  Requests that arrive during a call pile up and form the next batch, so under load
  batches grow by themselves.
- If ``policy.run`` raises, or returns the wrong number of results, every request
  of that batch fails with :class:`PolicyRunError`; later batches are unaffected.
- A request whose ``submit`` was cancelled, or whose ``alive()`` answers False when a
  batch is formed (its robot left), is dropped before it joins a batch, so it costs no
  model time; its ``submit`` raises :class:`RequestAbandoned`.
"""

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Hashable
from typing import Any

import attrs

from openpi_core.errors import OpenpiError


class PolicyRunError(OpenpiError):
    """``policy.run`` failed for a batch; the message names the original error."""


class RequestAbandoned(OpenpiError):
    """The request's robot left before its work began; nobody waits for the answer."""


@attrs.define
class _Request:
    prepared: Any
    key: Hashable
    arrival: float
    result: asyncio.Future
    alive: Callable[[], bool]


class Batcher:
    """Groups submitted requests into ``run`` calls on one worker thread (see the module docstring).

    Args:
        run: the batched model call, ``policy.run``: a list of prepared items to a
            list of result dicts, one per item, in order.
        executor: the single-thread executor ``run`` is called on.
        max_batch: the most items per call (>= 1).
        batch_window_ms: how long the oldest request may wait for company.
        on_batch: called on the event loop with the size of every batch that ran.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], list[dict]],
        executor: concurrent.futures.ThreadPoolExecutor,
        *,
        max_batch: int,
        batch_window_ms: float,
        on_batch: Callable[[int], None],
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch should be at least 1, got {max_batch}")
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._window_s = batch_window_ms / 1000.0
        self._on_batch = on_batch
        self._pending: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="openpi-batcher")

    async def close(self) -> None:
        """Stop the loop; requests still waiting fail with :class:`PolicyRunError`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        _fail(list(self._pending), PolicyRunError("server is shutting down"))
        self._pending.clear()

    async def submit(self, prepared: Any, key: Hashable, alive: Callable[[], bool] = lambda: True) -> dict:
        """The result of ``prepared`` once its batch has run.

        ``alive`` is asked, when batches are formed, whether anybody still waits for it.

        Raises:
            PolicyRunError: its batch's ``run`` call failed.
            RequestAbandoned: ``alive()`` answered False before it joined a batch.
        """
        loop = asyncio.get_running_loop()
        request = _Request(prepared, key, time.monotonic(), loop.create_future(), alive)
        self._pending.append(request)
        self._arrived.set()
        return await request.result

    async def _serve(self) -> None:
        while True:
            while not self._drop_gone():
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._collect(self._pending[0])
            if batch:
                await self._run_batch(batch)

    def _drop_gone(self) -> int:
        """Forget requests whose submitter gave up or whose robot left; how many are left."""
        for request in self._pending:
            if not request.result.done() and not request.alive():
                request.result.set_exception(RequestAbandoned("the robot left before its request was computed"))
        if any(request.result.done() for request in self._pending):
            self._pending = collections.deque(r for r in self._pending if not r.result.done())
        return len(self._pending)

    async def _collect(self, first: _Request) -> list[_Request]:
        deadline = first.arrival + self._window_s
        while self._count(first.key) < self._max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._drop_gone()
        batch = [request for request in self._pending if request.key == first.key][: self._max_batch]
        taken = set(map(id, batch))
        self._pending = collections.deque(request for request in self._pending if id(request) not in taken)
        return batch

    def _count(self, key: Hashable) -> int:
        return sum(request.key == key for request in self._pending)

    async def _run_batch(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [r.prepared for r in batch])
            if len(results) != len(batch):
                raise PolicyRunError(f"policy.run returned {len(results)} results for a batch of {len(batch)}")
        except asyncio.CancelledError:
            _fail(batch, PolicyRunError("server is shutting down"))
            raise
        except Exception as error:
            _fail(batch, error if isinstance(error, PolicyRunError) else _wrap(error))
            return
        finally:
            self._on_batch(len(batch))
        for request, result in zip(batch, results, strict=True):
            if not request.result.done():
                request.result.set_result(result)


def _wrap(error: Exception) -> PolicyRunError:
    wrapped = PolicyRunError(f"{type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


def _fail(requests: list[_Request], error: PolicyRunError) -> None:
    for request in requests:
        if not request.result.done():
            request.result.set_exception(error)
