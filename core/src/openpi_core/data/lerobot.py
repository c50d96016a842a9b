"""Read LeRobot datasets (v2.1 and v3.0) from a local directory, without the ``lerobot`` package.

Layouts, as written by LeRobot (``meta/info.json`` names the version and the path templates):

* **v2.1**: one parquet per episode, ``data/chunk-XXX/episode_XXXXXX.parquet``; one MP4
  per episode and camera, ``videos/chunk-XXX/<camera>/episode_XXXXXX.mp4``; episodes in
  ``meta/episodes.jsonl`` (``episode_index``, ``tasks``, ``length``), tasks in
  ``meta/tasks.jsonl`` (``task_index``, ``task``).
* **v3.0**: files that hold many episodes, ``data/chunk-XXX/file-XXX.parquet`` and
  ``videos/<camera>/chunk-XXX/file-XXX.mp4`` (episodes concatenated in time); episodes
  in ``meta/episodes/chunk-XXX/file-XXX.parquet`` with, per camera, the file and the
  ``from_timestamp``/``to_timestamp`` of the episode inside it; tasks in
  ``meta/tasks.parquet``.

Parquet is read with pyarrow and video decoded with PyAV; both are imported on first
use (``pip install 'openpi-core[data]'``), so importing this module needs numpy only.

``meta/tasks.parquet`` holds the task text in a ``task`` column, as this project's
writer stores it, or as the pandas index, as LeRobot stores it (an unnamed index is
the column ``__index_level_0__``, named in the schema's pandas metadata).

Integrity: a parquet file that cannot be read (truncated, not parquet, a corrupt page)
is an :class:`~openpi_core.errors.InputError` naming the file. Parquet pages can carry
a CRC32 of their bytes; this project's writer (:mod:`openpi_core.data.writer`) writes
them (:data:`PARQUET_WRITE_OPTIONS`), and reading verifies every page that has one, so
flipped bytes in such a file are an error rather than silently different data. Files
written without page CRCs (LeRobot's) cannot be checked this way. ``OPENPI_SKIP_CHECKSUMS=1``
turns the page verification off.
"""

import collections
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError

V21 = "v2.1"
V30 = "v3.0"
SUPPORTED_VERSIONS = ("v2.0", V21, V30)

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PARQUET_PATH = "meta/tasks.parquet"
EPISODES_JSONL_PATH = "meta/episodes.jsonl"
EPISODES_STATS_JSONL_PATH = "meta/episodes_stats.jsonl"
TASKS_JSONL_PATH = "meta/tasks.jsonl"
EPISODES_V30_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

DATA_PATH = {
    V21: "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
    V30: "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
}
VIDEO_PATH = {
    V21: "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
    V30: "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
}
DEFAULT_CHUNKS_SIZE = 1000

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
"""Columns every LeRobot dataset has, besides its own features."""

CAMERA_DTYPES = ("video", "image")

DEFAULT_TOLERANCE_S = 1e-4
"""How far a decoded video frame's time may be from the one asked for (LeRobot's default)."""

DEFAULT_CACHE_MB = 256

PARQUET_WRITE_OPTIONS: dict[str, Any] = {"write_page_checksum": True}
"""Options of every parquet file the project writes: a CRC32 per page, which reading verifies."""
PANDAS_INDEX_COLUMN = "__index_level_0__"
"""The column pyarrow stores an unnamed pandas index in."""


def import_pyarrow() -> Any:
    """``pyarrow.parquet``, or an :class:`InputError` that says what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise InputError(
            "reading and writing LeRobot datasets needs pyarrow: pip install 'openpi-core[data]'"
        ) from error
    return pq


def import_av() -> Any:
    """The PyAV module, or an :class:`InputError` that says what to install."""
    try:
        import av
    except ImportError as error:
        raise InputError("LeRobot videos need PyAV: pip install 'openpi-core[data]'") from error
    return av


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"cannot read {str(path)!r}: {error}") from error
    except json.JSONDecodeError as error:
        raise InputError(f"{str(path)!r} is not valid JSON: {error}") from error


def read_jsonl(path: Path) -> list[Any]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise InputError(f"cannot read {str(path)!r}: {error}") from error
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as error:
        raise InputError(f"{str(path)!r} is not valid JSON lines: {error}") from error


def _verify_pages() -> bool:
    from openpi_core.checkpoints._io import should_verify

    return should_verify()


def _parquet_error(path: Path, error: Exception) -> InputError:
    return InputError(f"cannot read parquet file {str(path)!r} (truncated or corrupt?): {error}")


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> Any:
    """A pyarrow Table of ``path`` (only ``columns`` when given), page CRCs verified where present.

    Raises:
        InputError: the file is missing, unreadable, not parquet or corrupt (naming it).
    """
    pq = import_pyarrow()
    if not path.is_file():
        raise InputError(f"LeRobot dataset file {str(path)!r} is missing")
    try:
        return pq.read_table(
            path, columns=None if columns is None else list(columns), page_checksum_verification=_verify_pages()
        )
    except Exception as error:  # pyarrow raises its own types for corrupt files
        raise _parquet_error(path, error) from error


def open_parquet(path: Path) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of ``path`` (its footer read), page CRCs verified where present.

    Raises:
        InputError: the file is missing, unreadable, not parquet or corrupt (naming it).
    """
    pq = import_pyarrow()
    if not path.is_file():
        raise InputError(f"LeRobot dataset file {str(path)!r} is missing")
    try:
        return pq.ParquetFile(path, page_checksum_verification=_verify_pages())
    except Exception as error:  # pyarrow raises its own types for corrupt files
        raise _parquet_error(path, error) from error


def task_column(table: Any, where: str) -> str:
    """The column of ``meta/tasks.parquet`` holding the task text: ``task``, else the
    pandas index that the schema's pandas metadata names (how LeRobot writes it).

    Raises:
        InputError: neither is there.
    """
    if "task" in table.column_names:
        return "task"
    metadata = (table.schema.metadata or {}).get(b"pandas")
    index_columns: list[Any] = []
    if metadata:
        try:
            index_columns = list(json.loads(metadata).get("index_columns") or [])
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            index_columns = []
    # A RangeIndex is recorded as a dict, not stored as a column; only a stored one holds text.
    stored = [name for name in index_columns if isinstance(name, str) and name in table.column_names]
    if len(stored) == 1:
        return stored[0]
    raise InputError(
        f"{where} should have the columns 'task_index' and 'task' (or the task text as its pandas index, "
        f"as LeRobot writes it), got {table.column_names}"
    )


def arrow_to_numpy(column: Any, shape: Sequence[int], where: str) -> np.ndarray:
    """A (possibly nested) list or scalar pyarrow column as numpy ``[N, *shape]``.

    ``shape`` ``[1]`` (LeRobot's declaration of scalars) gives ``[N]``. String columns
    become object arrays.
    """
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(column)
    values = column
    depth = 0
    while (
        pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type)
    ):
        values = values.flatten()
        depth += 1
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        array = np.asarray(values.to_pylist(), dtype=object)
    else:
        array = values.to_numpy(zero_copy_only=False)
    if depth == 0:
        return array
    want = tuple(int(d) for d in shape)
    if rows and array.size != rows * int(np.prod(want)):
        raise InputError(f"{where}: expected {rows} rows of shape {list(want)}, got {array.size} values in all")
    return array.reshape(rows, *want)


@attrs.frozen
class EpisodeInfo:
    """Where one episode lives.

    Attributes:
        index: the ``episode_index``.
        length: number of frames.
        tasks: the episode's task texts.
        data_file: parquet file (relative to the dataset root) holding its rows.
        videos: camera key -> (video file relative to the root, time in that file where
            the episode starts; 0 for v2.1).
    """

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: str
    videos: Mapping[str, tuple[str, float]]


class _FrameCache:
    """Decoded frames (and other read-back data) by key, least recently used first out, within a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[str, int], tuple[float, Any, int]] = collections.OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, int]) -> tuple[float, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0], entry[1]

    def put(self, key: tuple[str, int], time: float, value: Any, nbytes: int | None = None) -> None:
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        size = value.nbytes if nbytes is None else nbytes
        self._entries[key] = (time, value, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, _, old) = self._entries.popitem(last=False)
            self._bytes -= old


class _VideoFile:
    """One open MP4 file: decodes the frames nearest to given times, continuing forward when it can."""

    # Decoding forward through this much video is cheaper than seeking back to a keyframe.
    CONTINUE_WINDOW_S = 1.0

    def __init__(self, path: Path, fps: float, cache: _FrameCache) -> None:
        av = import_av()
        try:
            self._container = av.open(str(path))
        except Exception as error:  # PyAV raises its own error types
            raise InputError(f"cannot open video {str(path)!r}: {error}") from error
        if not self._container.streams.video:
            raise InputError(f"video file {str(path)!r} has no video stream")
        self._stream = self._container.streams.video[0]
        self._path = str(path)
        self._fps = fps
        self._cache = cache
        self._frames: Any = None  # the running decode generator
        self._last_time = -np.inf  # time of the last frame the generator yielded

    def close(self) -> None:
        self._container.close()

    def _key(self, time: float) -> tuple[str, int]:
        return (self._path, round(time * self._fps))

    def _lookup(self, time: float, tolerance: float, fresh: Mapping[tuple[str, int], Any]) -> np.ndarray | None:
        key = self._key(time)
        entry = fresh.get(key) or self._cache.get(key)
        if entry is not None and abs(entry[0] - time) <= tolerance:
            return entry[1]
        return None

    def frames_at(self, times: Sequence[float], tolerance: float) -> list[np.ndarray]:
        """HWC uint8 frames whose times are within ``tolerance`` of ``times`` (seconds in the file)."""
        found = {time: self._lookup(time, tolerance, {}) for time in set(times)}
        missing = sorted(time for time, frame in found.items() if frame is None)
        if missing:
            try:
                fresh = self._decode_range(missing[0], missing[-1], tolerance)
            except Exception as error:  # PyAV raises its own error types for corrupt streams
                self._frames = None
                raise InputError(f"cannot decode video {self._path!r} (truncated or corrupt?): {error}") from error
            for time in missing:
                found[time] = self._lookup(time, tolerance, fresh)
                if found[time] is None:
                    raise InputError(
                        f"video {self._path!r} has no frame within {tolerance} s of t={time:.6f} s "
                        f"(the file's timestamps do not match the dataset's; is its fps {self._fps}?)"
                    )
        return [found[time] for time in times]

    def _decode_range(self, first: float, last: float, tolerance: float) -> dict[tuple[str, int], Any]:
        """Decode the frames from ``first`` to ``last`` (seconds), cache them, and return them by key."""
        if self._frames is None or not (
            self._last_time + tolerance < first <= self._last_time + self.CONTINUE_WINDOW_S
        ):
            time_base = self._stream.time_base
            self._container.seek(max(0, int((first - tolerance) / time_base)), stream=self._stream, backward=True)
            self._frames = self._container.decode(self._stream)
            self._last_time = -np.inf
        decoded = {}
        for frame in self._frames:
            time = float(frame.time)
            self._last_time = time
            if time >= first - tolerance - 1.0 / self._fps:
                key = self._key(time)
                decoded[key] = (time, frame.to_ndarray(format="rgb24"))
                self._cache.put(key, *decoded[key])
            if time >= last - tolerance:
                return decoded
        self._frames = None  # end of stream: the next request seeks again
        return decoded


def decode_image_bytes(data: bytes, where: str) -> np.ndarray:
    """An encoded image (PNG, JPEG, …; trailing padding is fine) as HWC uint8, decoded with PyAV."""
    import io

    av = import_av()
    try:
        with av.open(io.BytesIO(data)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except Exception as error:  # PyAV raises its own error types
        raise InputError(f"{where}: cannot decode the image ({len(data)} bytes): {error}") from error


def _shape(feature: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in feature.get("shape") or (1,))


class LeRobotDataset:
    """Random access to the frames of a local LeRobot dataset, v2.1 or v3.0.

    ``ds[i]`` is a flat dict in LeRobot's key names: every parquet column as numpy
    (``"observation.state"`` ``[S]``, scalars such as ``"timestamp"``, ``"frame_index"``,
    ``"episode_index"``, ``"index"``, ``"task_index"`` as 0-d arrays), every camera as
    HWC uint8 ``[H, W, 3]``, and ``"task"``, the text of ``task_index``.

    With ``action_horizon=H`` each of ``action_keys`` becomes a chunk ``[H, A]`` of the
    frames ``i, i+1, …, i+H-1`` of the same episode (as openpi asks LeRobot with
    ``delta_timestamps={key: [t / fps for t in range(H)]}``); steps past the episode's
    end repeat its last frame and are flagged in ``"<key>_is_pad"`` bool ``[H]``.
    ``delta_timestamps`` gives any offsets in seconds, for any key (cameras give
    ``[T, H, W, 3]``); offsets before the episode's start repeat its first frame.

    Args:
        root: the dataset directory (holding ``meta/info.json``).
        action_horizon: chunk length H for ``action_keys``; None for single frames.
        action_keys: keys to chunk; default ``"action"``, or ``"actions"`` when the
            dataset has that instead.
        delta_timestamps: key -> offsets in seconds; merged over the action chunks.
        tolerance_s: how far a decoded video frame or a requested offset may be from
            the frame grid.
        cache_mb: memory for decoded video frames and for row groups of images
            stored in the parquet files, per process.
        decode_cameras: False returns every camera as a black ``[1, 1, 3]`` image
            without reading it, for passes that need only the low-dim keys (norm stats).

    Raises:
        InputError: a missing or malformed metadata file, an unsupported version, or
            keys that are not features; messages name the file or key.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        action_horizon: int | None = None,
        action_keys: Sequence[str] | None = None,
        delta_timestamps: Mapping[str, Sequence[float]] | None = None,
        tolerance_s: float = DEFAULT_TOLERANCE_S,
        cache_mb: float = DEFAULT_CACHE_MB,
        decode_cameras: bool = True,
    ) -> None:
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise InputError(f"{str(self.root)!r} is not a LeRobot dataset: {INFO_PATH} is missing")
        self.info: dict[str, Any] = read_json(info_path)
        self.version: str = str(self.info.get("codebase_version"))
        if self.version not in SUPPORTED_VERSIONS:
            raise InputError(
                f"{str(info_path)!r}: codebase_version should be one of {list(SUPPORTED_VERSIONS)}, "
                f"got {self.info.get('codebase_version')!r}"
            )
        for field in ("fps", "features"):
            if field not in self.info:
                raise InputError(f"{str(info_path)!r} lacks the field {field!r}")
        self.fps: float = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
        self.camera_keys: tuple[str, ...] = tuple(
            key for key, feature in self.features.items() if feature.get("dtype") in CAMERA_DTYPES
        )
        self.video_keys: tuple[str, ...] = tuple(
            key for key in self.camera_keys if self.features[key].get("dtype") == "video"
        )
        self.tolerance_s = float(tolerance_s)
        self.cache_mb = float(cache_mb)
        self.decode_cameras = bool(decode_cameras)
        self.tasks: dict[int, str] = self._read_tasks()
        self.episodes: list[EpisodeInfo] = self._read_episodes()
        self._starts = np.cumsum([0] + [episode.length for episode in self.episodes])
        self.delta_indices: dict[str, np.ndarray] = self._delta_indices(action_horizon, action_keys, delta_timestamps)
        self.stats: dict[str, Any] | None = (
            read_json(self.root / STATS_PATH) if (self.root / STATS_PATH).is_file() else None
        )
        self._init_caches()

    # -- metadata ------------------------------------------------------------------

    @property
    def is_v3(self) -> bool:
        return self.version == V30

    def _read_tasks(self) -> dict[int, str]:
        if self.is_v3:
            path = self.root / TASKS_PARQUET_PATH
            table = read_parquet(path)
            text = task_column(table, str(path))
            if "task_index" not in table.column_names:
                raise InputError(f"{str(path)!r} should have the column 'task_index', got {table.column_names}")
            indices = table.column("task_index").to_pylist()
            return {int(i): str(task) for i, task in zip(indices, table.column(text).to_pylist(), strict=True)}
        path = self.root / TASKS_JSONL_PATH
        tasks = {}
        for row in read_jsonl(path):
            if "task_index" not in row or "task" not in row:
                raise InputError(f"{TASKS_JSONL_PATH}: each line needs 'task_index' and 'task', got {sorted(row)}")
            tasks[int(row["task_index"])] = str(row["task"])
        return tasks

    def _read_episodes(self) -> list[EpisodeInfo]:
        episodes = self._read_v3_episodes() if self.is_v3 else self._read_v2_episodes()
        episodes.sort(key=lambda episode: episode.index)
        if not episodes:
            raise InputError(f"LeRobot dataset {str(self.root)!r} has no episodes")
        return episodes

    def _read_v2_episodes(self) -> list[EpisodeInfo]:
        chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
        data_path = self.info.get("data_path") or DATA_PATH[V21]
        video_path = self.info.get("video_path") or VIDEO_PATH[V21]
        episodes = []
        for row in read_jsonl(self.root / EPISODES_JSONL_PATH):
            missing = [key for key in ("episode_index", "length") if key not in row]
            if missing:
                raise InputError(f"{EPISODES_JSONL_PATH}: a line lacks {missing}; got {sorted(row)}")
            index = int(row["episode_index"])
            chunk = index // chunks_size
            videos = {
                key: (video_path.format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0)
                for key in self.video_keys
            }
            episodes.append(
                EpisodeInfo(
                    index=index,
                    length=int(row["length"]),
                    tasks=tuple(row.get("tasks") or ()),
                    data_file=data_path.format(episode_chunk=chunk, episode_index=index),
                    videos=videos,
                )
            )
        return episodes

    def _read_v3_episodes(self) -> list[EpisodeInfo]:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise InputError(f"LeRobot v3.0 dataset {str(self.root)!r} has no meta/episodes/chunk-*/file-*.parquet")
        data_path = self.info.get("data_path") or DATA_PATH[V30]
        video_path = self.info.get("video_path") or VIDEO_PATH[V30]
        episodes = []
        for path in files:
            table = read_parquet(path)
            required = ["episode_index", "length", "data/chunk_index", "data/file_index"]
            for key in self.video_keys:
                required += [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
            missing = [column for column in required if column not in table.column_names]
            if missing:
                raise InputError(f"{path.relative_to(self.root)}: missing the columns {missing}")
            rows = table.select([*required, *(["tasks"] if "tasks" in table.column_names else [])]).to_pylist()
            for row in rows:
                videos = {
                    key: (
                        video_path.format(
                            video_key=key,
                            chunk_index=int(row[f"videos/{key}/chunk_index"]),
                            file_index=int(row[f"videos/{key}/file_index"]),
                        ),
                        float(row[f"videos/{key}/from_timestamp"]),
                    )
                    for key in self.video_keys
                }
                episodes.append(
                    EpisodeInfo(
                        index=int(row["episode_index"]),
                        length=int(row["length"]),
                        tasks=tuple(row.get("tasks") or ()),
                        data_file=data_path.format(
                            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
                        ),
                        videos=videos,
                    )
                )
        return episodes

    def _delta_indices(
        self,
        action_horizon: int | None,
        action_keys: Sequence[str] | None,
        delta_timestamps: Mapping[str, Sequence[float]] | None,
    ) -> dict[str, np.ndarray]:
        deltas: dict[str, list[float]] = {key: list(value) for key, value in (delta_timestamps or {}).items()}
        if action_horizon is not None:
            if action_horizon < 1:
                raise InputError(f"action_horizon should be >= 1, got {action_horizon}")
            if action_keys is None:
                action_keys = (
                    ["actions"] if "action" not in self.features and "actions" in self.features else ["action"]
                )
            for key in action_keys:
                deltas[key] = [t / self.fps for t in range(action_horizon)]
        indices = {}
        for key, seconds in deltas.items():
            if key not in self.features:
                raise InputError(
                    f"delta timestamps name {key!r}, which is not a feature of {str(self.root)!r}; "
                    f"features: {sorted(self.features)}"
                )
            steps = np.asarray(seconds, dtype=np.float64) * self.fps
            rounded = np.round(steps)
            off = np.abs(steps - rounded) / self.fps
            if np.any(off > self.tolerance_s):
                bad = float(np.asarray(seconds)[int(np.argmax(off))])
                raise InputError(
                    f"delta timestamp {bad} s of {key!r} is not a multiple of 1/fps = {1 / self.fps:.6f} s "
                    f"(tolerance {self.tolerance_s} s)"
                )
            indices[key] = rounded.astype(np.int64)
        return indices

    # -- per-process state (rebuilt after pickling, e.g. in a worker) ---------------

    def _init_caches(self) -> None:
        self._lock = threading.Lock()
        self._columns: dict[str, np.ndarray] | None = None
        self._row_source: tuple[np.ndarray, np.ndarray] | None = None  # (file, row in file) of each frame
        self._data_files: list[str] = []
        self._frame_cache = _FrameCache(int(self.cache_mb * 2**20))
        self._videos: collections.OrderedDict[str, _VideoFile] = collections.OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_columns", "_row_source", "_data_files", "_frame_cache", "_videos"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_caches()

    # -- tabular data ------------------------------------------------------------------

    def _load_columns(self) -> dict[str, np.ndarray]:
        """Every non-camera column, rows ordered by (episode, frame), read once per process.

        Image columns (encoded images in the parquet) stay on disk: only where each
        frame's row lives is kept, and :meth:`_parquet_image` reads its row group.
        """
        if self._columns is not None:
            return self._columns
        import_pyarrow()  # the install hint when pyarrow is missing
        import pyarrow as pa

        files = list(dict.fromkeys(episode.data_file for episode in self.episodes))
        images = {key for key in self.camera_keys if self.features[key].get("dtype") == "image"}
        tables = []
        for name in files:
            wanted = None
            if images:
                schema_names = open_parquet(self.root / name).schema_arrow.names
                wanted = [c for c in schema_names if c not in images]
            tables.append(read_parquet(self.root / name, wanted))
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        for name in ("episode_index", "frame_index"):
            if name not in table.column_names:
                raise InputError(f"the data files of {str(self.root)!r} lack the column {name!r}")
        episode_column = table.column("episode_index").to_numpy()
        order = np.lexsort((table.column("frame_index").to_numpy(), episode_column))
        order = order[np.isin(episode_column[order], [episode.index for episode in self.episodes])]
        if len(order) != self._starts[-1]:
            counts = collections.Counter(episode_column.tolist())
            for episode in self.episodes:
                if counts.get(episode.index, 0) != episode.length:
                    raise InputError(
                        f"episode {episode.index} should have {episode.length} frames (meta/episodes), "
                        f"its data file {episode.data_file!r} has {counts.get(episode.index, 0)}"
                    )
        offsets = np.cumsum([0] + [len(t) for t in tables])
        file_of_row = np.searchsorted(offsets, order, side="right") - 1
        self._row_source = (file_of_row, order - offsets[file_of_row])
        self._data_files = files
        columns = {}
        for name in table.column_names:
            feature = self.features.get(name, DEFAULT_FEATURES.get(name, {}))
            columns[name] = arrow_to_numpy(table.column(name), _shape(feature), f"column {name!r}")[order]
        self._columns = columns
        return columns

    def _parquet_image(self, key: str, position: int) -> np.ndarray:
        """The image ``key`` of frame ``position``, from its row group (cached) in the data file."""
        import_pyarrow()  # the install hint when pyarrow is missing
        import pyarrow as pa

        assert self._row_source is not None
        file_index, row = int(self._row_source[0][position]), int(self._row_source[1][position])
        relative = self._data_files[file_index]
        where = f"image {key!r} of frame {position} in {relative!r}"
        starts_entry = self._frame_cache.get((relative, -1))
        if starts_entry is None:
            metadata = open_parquet(self.root / relative).metadata
            starts = np.cumsum([0] + [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
            self._frame_cache.put((relative, -1), 0.0, starts)
        else:
            starts = starts_entry[1]
        group = int(np.searchsorted(starts, row, side="right")) - 1
        cache_key = (f"{relative}#{key}", group)
        entry = self._frame_cache.get(cache_key)
        if entry is None:
            try:
                column = open_parquet(self.root / relative).read_row_group(group, columns=[key]).column(key)
            except InputError:
                raise
            except Exception as error:  # pyarrow raises its own types for corrupt pages
                raise _parquet_error(self.root / relative, error) from error
            column = column.combine_chunks()
            if pa.types.is_struct(column.type):
                data = column.field("bytes").to_pylist()
                has_path = column.type.get_field_index("path") >= 0
                paths = column.field("path").to_pylist() if has_path else [None] * len(data)
            else:
                data, paths = column.to_pylist(), [None] * len(column)
            self._frame_cache.put(cache_key, 0.0, (data, paths), nbytes=sum(len(d) for d in data if d))
            entry = (0.0, (data, paths))
        data, paths = entry[1]
        blob, path = data[row - starts[group]], paths[row - starts[group]]
        if not blob and path:
            blob = (self.root / path).read_bytes()
        if not blob:
            raise InputError(f"{where} is empty")
        return decode_image_bytes(blob, where)

    # -- video --------------------------------------------------------------------------

    def _video(self, relative: str) -> _VideoFile:
        video = self._videos.get(relative)
        if video is None:
            path = self.root / relative
            if not path.is_file():
                raise InputError(f"video file {relative!r} of {str(self.root)!r} is missing")
            video = _VideoFile(path, self.fps, self._frame_cache)
            self._videos[relative] = video
            if len(self._videos) > 32:  # keep the number of open files bounded
                self._videos.popitem(last=False)[1].close()
        else:
            self._videos.move_to_end(relative)
        return video

    # -- access -----------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode_bounds(self, position: int) -> tuple[int, int]:
        """``(start, stop)`` frame positions of the ``position``-th episode (in episode order)."""
        return int(self._starts[position]), int(self._starts[position + 1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is out of range for a dataset of {len(self)} frames")
        with self._lock:
            return self._item(index)

    def _item(self, index: int) -> dict[str, Any]:
        columns = self._load_columns()
        position = int(np.searchsorted(self._starts, index, side="right")) - 1
        episode = self.episodes[position]
        start, stop = self.episode_bounds(position)

        item: dict[str, Any] = {name: np.asarray(column[index]) for name, column in columns.items()}
        queries: dict[str, np.ndarray] = {}
        for key, deltas in self.delta_indices.items():
            wanted = index + deltas
            rows = np.clip(wanted, start, stop - 1)
            item[f"{key}_is_pad"] = (wanted < start) | (wanted >= stop)
            if key in self.camera_keys:
                queries[key] = rows
            else:
                item[key] = np.asarray(columns[key][rows])
        for key in self.camera_keys:
            rows = queries.get(key, np.asarray([index]))
            if self.decode_cameras:
                frames = self._camera_frames(key, episode, rows, columns)
            else:
                frames = np.zeros((len(rows), 1, 1, 3), dtype=np.uint8)
            item[key] = frames if key in queries else frames[0]
        task_index = int(item["task_index"]) if "task_index" in item else None
        if task_index is not None:
            if task_index not in self.tasks:
                raise InputError(f"frame {index} has task_index {task_index}, not among the tasks {sorted(self.tasks)}")
            item["task"] = self.tasks[task_index]
        return item

    def _camera_frames(
        self, key: str, episode: EpisodeInfo, rows: np.ndarray, columns: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        if self.features[key].get("dtype") == "image":
            return np.stack([self._parquet_image(key, int(row)) for row in rows])
        if "timestamp" not in columns:
            raise InputError(f"the data files of {str(self.root)!r} lack the column 'timestamp' needed for videos")
        relative, offset = episode.videos[key]
        times = [offset + float(columns["timestamp"][int(row)]) for row in rows]
        return np.stack(self._video(relative).frames_at(times, self.tolerance_s))

    def iter_episodes(self) -> Iterable[tuple[EpisodeInfo, int, int]]:
        """Each episode with its ``(start, stop)`` frame positions."""
        for position, episode in enumerate(self.episodes):
            yield (episode, *self.episode_bounds(position))

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset({str(self.root)!r}, version={self.version}, episodes={self.num_episodes}, "
            f"frames={len(self)}, fps={self.fps:g}, cameras={list(self.camera_keys)})"
        )
