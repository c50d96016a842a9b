"""Batches of transformed samples, forever, deterministic from a seed, resumable exactly.

Epoch ``e`` visits the dataset in the order ``numpy.random.default_rng([seed, e]).permutation(N)``
(or ``0..N-1`` without shuffling), cut into batches of ``batch_size``. Each sample goes
through the transforms on its own, then the samples of a batch are stacked leaf by leaf.
With ``num_workers > 0``, background processes (spawned, so safe with threads and with
CUDA/XLA in the parent) build whole batches; batches come back in order, so the
stream is identical to ``num_workers=0`` for the same seed.

A loader remembers how many batches it has handed out. :meth:`DataLoader.state_dict`
records that position and :meth:`DataLoader.load_state_dict` returns to it, so a
training run restored from a checkpoint sees exactly the batches it would have seen.
"""

import collections
import multiprocessing
import pickle
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from openpi_core.errors import InputError
from openpi_core.transforms.base import DataTransform, compose

STATE_VERSION = 1


class Dataset(Protocol):
    """Anything with ``len`` and integer indexing that returns a sample dict (e.g. ``LeRobotDataset``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples leaf by leaf into a nested dict of arrays with a leading batch axis ``B``.

    Raises:
        InputError: the samples do not have the same keys, or a leaf's shapes differ
            (the message names the key path).
    """
    return _collate(samples, "")


def _collate(samples: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, Any]:
    first = samples[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        path = f"{prefix}{key}"
        values = []
        for sample in samples:
            if key not in sample:
                raise InputError(f"cannot batch samples: one lacks {path!r}; the first has keys {sorted(first)}")
            values.append(sample[key])
        if isinstance(value, Mapping):
            out[key] = _collate(values, f"{path}/")
            continue
        try:
            out[key] = np.stack([np.asarray(v) for v in values])
        except ValueError as error:
            shapes = ", ".join(sorted({str(list(np.shape(v))) for v in values}))
            raise InputError(f"cannot batch {path!r}: the samples have different shapes {shapes}") from error
    return out


class _Pickler(pickle.Pickler):
    """Pickles locks as new, unlocked locks, so that objects guarding lazy state with a
    lock (the tokenizer) can be sent to worker processes."""

    _lock_types = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}

    def reducer_override(self, obj: Any) -> Any:
        factory = self._lock_types.get(type(obj))
        return (factory, ()) if factory is not None else NotImplemented


def _dumps(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


_worker_state: dict[str, Any] = {}


def _worker_init(payload: bytes) -> None:
    dataset, transform = pickle.loads(payload)
    _worker_state["dataset"], _worker_state["transform"] = dataset, transform


def _worker_batch(indices: Sequence[int]) -> dict[str, Any]:
    return _load_batch(_worker_state["dataset"], _worker_state["transform"], indices)


def _load_batch(dataset: Dataset, transform: DataTransform, indices: Sequence[int]) -> dict[str, Any]:
    samples = []
    for index in indices:
        try:
            samples.append(transform(dataset[int(index)]))
        except Exception as error:
            error.add_note(f"while loading dataset item {int(index)}")
            raise
    return collate(samples)


class DataLoader:
    """Endless, seeded, resumable batches; build it with :func:`create_data_loader`.

    Iterating yields nested dicts of stacked numpy arrays: for π0 training, the
    :meth:`~openpi_core.observation.Observation.to_dict` layout (``image``,
    ``image_mask``, ``state``, ``tokenized_prompt``, …) plus ``actions`` ``[B, H, A]``.
    One iterator at a time: a new ``iter(loader)`` (or :meth:`load_state_dict`) continues
    from the loader's position, and an older iterator raises if used again.
    """

    def __init__(
        self,
        dataset: Dataset,
        transforms: Sequence[DataTransform],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        drop_last: bool = True,
        prefetch_batches: int = 2,
    ) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size should be >= 1, got {batch_size}")
        if num_workers < 0:
            raise InputError(f"num_workers should be >= 0, got {num_workers}")
        self.dataset = dataset
        self.transform = compose(list(transforms))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_workers = int(num_workers)
        self.drop_last = bool(drop_last)
        self.prefetch_batches = max(1, int(prefetch_batches))
        self.num_samples = len(dataset)
        if self.num_samples == 0 or (self.drop_last and self.num_samples < self.batch_size):
            raise InputError(
                f"a dataset of {self.num_samples} samples gives no batch of {self.batch_size}"
                + (" with drop_last" if self.drop_last else "")
            )
        self.epoch = 0
        self.batch_in_epoch = 0
        self._generation = 0  # bumped by load_state_dict: older iterators stop
        self._pool: Any = None

    # -- order ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def _batches_from(self, epoch: int, batch: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(epoch, batch, indices)`` from the given position on, forever."""
        while True:
            order = self.epoch_order(epoch)
            for number in range(batch, len(self)):
                yield epoch, number, order[number * self.batch_size : (number + 1) * self.batch_size]
            epoch, batch = epoch + 1, 0

    # -- iteration -------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._generation += 1
        return self._iterate(self._generation, self._batches_from(self.epoch, self.batch_in_epoch))

    def _iterate(self, generation: int, plan: Iterator[tuple[int, int, np.ndarray]]) -> Iterator[dict[str, Any]]:
        if self.num_workers == 0:
            for epoch, number, indices in plan:
                batch = _load_batch(self.dataset, self.transform, indices)
                self._check_current(generation)
                self._advance(epoch, number)
                yield batch
            return
        pool = self._worker_pool()
        pending: collections.deque[tuple[int, int, Any]] = collections.deque()
        try:
            while True:
                while len(pending) < self.num_workers * self.prefetch_batches:
                    epoch, number, indices = next(plan)
                    pending.append((epoch, number, pool.apply_async(_worker_batch, (indices.tolist(),))))
                epoch, number, result = pending.popleft()
                batch = result.get()
                self._check_current(generation)
                self._advance(epoch, number)
                yield batch
        finally:
            # Batches computed ahead and never handed out are dropped; the position stays exact.
            pending.clear()

    def _check_current(self, generation: int) -> None:
        if generation != self._generation:
            raise InputError(
                "this data loader iterator is stale: the loader was iterated again or its state was "
                "loaded since; iterate the loader anew"
            )

    def _advance(self, epoch: int, number: int) -> None:
        self.epoch, self.batch_in_epoch = epoch, number + 1
        if self.batch_in_epoch == len(self):
            self.epoch, self.batch_in_epoch = epoch + 1, 0

    def _worker_pool(self) -> Any:
        if self._pool is None:
            payload = _dumps((self.dataset, self.transform))
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.num_workers, initializer=_worker_init, initargs=(payload,))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later iteration starts new ones)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "DataLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.terminate()

    # -- resume -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position (batches handed out so far) and what the order depends on; JSON-serializable."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "num_samples": self.num_samples,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next batch is the one the saved loader would have given next.

        Raises:
            InputError: ``state`` is malformed or was saved by a loader whose order
                differs (another seed, batch size, shuffle, drop_last or dataset size).
        """
        missing = sorted({"version", "epoch", "batch_in_epoch", *_ORDER_FIELDS} - set(state))
        if missing:
            raise InputError(f"data loader state lacks {missing}; got keys {sorted(state)}")
        if state["version"] != STATE_VERSION:
            raise InputError(f"data loader state has version {state['version']}, expected {STATE_VERSION}")
        for field in _ORDER_FIELDS:
            if state[field] != getattr(self, field):
                raise InputError(
                    f"data loader state was saved with {field}={state[field]!r}, this loader has "
                    f"{field}={getattr(self, field)!r}; the batch order would differ"
                )
        epoch, batch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0 or not 0 <= batch < len(self):
            raise InputError(f"data loader state position epoch={epoch}, batch={batch} is out of range")
        self.epoch, self.batch_in_epoch = epoch, batch
        self._generation += 1


_ORDER_FIELDS = ("seed", "shuffle", "batch_size", "drop_last", "num_samples")


def create_data_loader(
    dataset: Dataset,
    transforms: Sequence[DataTransform],
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    drop_last: bool = True,
) -> DataLoader:
    """An endless :class:`DataLoader` over ``dataset``.

    Args:
        dataset: random access to sample dicts (a :class:`~openpi_core.data.LeRobotDataset`).
        transforms: applied in order to each sample (repack, embodiment inputs,
            Normalize, model transforms), then the samples are stacked.
        batch_size: samples per batch ``B``.
        seed: the shuffling seed; epoch ``e`` uses ``default_rng([seed, e])``.
        shuffle: visit samples in a new random order each epoch, else in order.
        num_workers: background processes building batches; 0 builds them in this process.
        drop_last: skip an epoch's last, smaller batch.

    Raises:
        InputError: ``batch_size`` < 1, ``num_workers`` < 0, or a dataset too small for one batch.
    """
    return DataLoader(
        dataset, transforms, batch_size, seed=seed, shuffle=shuffle, num_workers=num_workers, drop_last=drop_last
    )
