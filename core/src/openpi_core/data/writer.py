"""Write LeRobot datasets: v3.0 (the default) or v2.1, from numpy episodes.

Each camera is encoded with PyAV: H.264 (libx264, yuv420p, the default), AV1
(SVT-AV1 or libaom, when the PyAV build has one) or lossless H.264 in RGB
(libx264rgb at crf 0, which decodes back bit-exact). Keyframes every 2 frames by
default, as LeRobot does, so random access decodes at most one extra frame.

Every parquet file carries a CRC32 per page, which :class:`~openpi_core.data.LeRobotDataset`
verifies when reading, so flipped bytes are an error naming the file.

Usage::

    features = {
        "observation.images.top": {"dtype": "video", "shape": [H, W, 3]},
        "observation.state": {"dtype": "float32", "shape": [14]},
        "action": {"dtype": "float32", "shape": [14]},
    }
    with LeRobotWriter(root, fps=50, features=features) as writer:
        writer.add_episode({"observation.images.top": frames, ...}, task="fold the towel")

Every array of an episode is ``[T, *shape]`` (cameras HWC uint8 ``[T, H, W, 3]``).
"""

import json
import shutil
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.data.lerobot import (
    DATA_PATH,
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_FEATURES,
    EPISODES_JSONL_PATH,
    EPISODES_STATS_JSONL_PATH,
    EPISODES_V30_PATH,
    INFO_PATH,
    PARQUET_WRITE_OPTIONS,
    STATS_PATH,
    TASKS_JSONL_PATH,
    TASKS_PARQUET_PATH,
    V21,
    V30,
    VIDEO_PATH,
    import_av,
    import_pyarrow,
)
from openpi_core.errors import InputError

VIDEO_CODECS = ("h264", "av1", "lossless")
_AV1_ENCODERS = ("libsvtav1", "libaom-av1")
_ARROW_TYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


@attrs.frozen
class VideoSettings:
    """How cameras are encoded.

    Attributes:
        codec: ``"h264"`` (libx264, yuv420p: even sizes only), ``"av1"`` (yuv420p) or
            ``"lossless"`` (libx264rgb at crf 0, rgb24: exact round trip, any size).
        crf: quality for h264 and av1; lower is better (18 is visually lossless for h264).
        gop: distance between keyframes in frames.
        preset: the encoder's speed preset, or None for its default.
    """

    codec: str = attrs.field(default="h264")
    crf: int = 18
    gop: int = 2
    preset: str | None = None

    @codec.validator
    def _check_codec(self, attribute: attrs.Attribute, value: str) -> None:
        if value not in VIDEO_CODECS:
            raise InputError(f"VideoSettings.codec should be one of {VIDEO_CODECS}, got {value!r}")

    def encoder(self) -> tuple[str, str, dict[str, str]]:
        """``(PyAV encoder name, pixel format, encoder options)``."""
        options = {"g": str(self.gop)}
        if self.preset is not None:
            options["preset"] = self.preset
        if self.codec == "lossless":
            return "libx264rgb", "rgb24", {**options, "crf": "0"}
        if self.codec == "h264":
            return "libx264", "yuv420p", {**options, "crf": str(self.crf)}
        available = import_av().codecs_available
        for name in _AV1_ENCODERS:
            if name in available:
                return name, "yuv420p", {**options, "crf": str(self.crf)}
        raise InputError(f"no AV1 encoder in this PyAV build (looked for {list(_AV1_ENCODERS)}); use codec='h264'")


DEFAULT_VIDEO = VideoSettings()
"""H.264 at crf 18 with a keyframe every 2 frames."""


class _VideoWriter:
    """One MP4 file being written, frame times ``k / fps`` continuing across episodes."""

    def __init__(self, path: Path, fps: int, height: int, width: int, settings: VideoSettings) -> None:
        av = import_av()
        name, self.pix_fmt, options = settings.encoder()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.codec = name
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(name, rate=fps)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = self.pix_fmt
        self._stream.codec_context.time_base = Fraction(1, fps)
        self._stream.options = options
        self.frames = 0
        self._av = av

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames
            self.frames += 1
            self._container.mux(self._stream.encode(video_frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


def write_video(
    path: str | Path, frames: Sequence[np.ndarray], fps: int, settings: VideoSettings = DEFAULT_VIDEO
) -> Path:
    """Encode ``frames`` (uint8 ``[H, W, 3]`` each) as one MP4 at ``fps``; returns ``path``."""
    path = Path(path)
    height, width = np.shape(frames[0])[:2]
    writer = _VideoWriter(path, fps, height, width, settings)
    try:
        writer.write(frames)
    finally:
        writer.close()
    return path


def _feature_shape(feature: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in feature["shape"])


def _arrow_type(feature: Mapping[str, Any]) -> Any:
    import pyarrow as pa

    value_type = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    shape = _feature_shape(feature)
    if shape == (1,):
        return value_type
    for size in reversed(shape):
        value_type = pa.list_(value_type, size)
    return value_type


def _arrow_column(values: np.ndarray, feature: Mapping[str, Any]) -> Any:
    import pyarrow as pa

    arrow_type = _arrow_type(feature)
    values = np.ascontiguousarray(values, dtype=np.dtype(feature["dtype"]))
    if not pa.types.is_fixed_size_list(arrow_type):
        return pa.array(values.reshape(len(values)), type=arrow_type)
    array = pa.array(values.reshape(-1))
    for size in reversed(_feature_shape(feature)):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def _stats(values: np.ndarray, *, image: bool) -> dict[str, np.ndarray]:
    """LeRobot's per-feature stats: min, max, mean, std over frames (images: per channel in [0, 1], ``[3, 1, 1]``)."""
    if image:
        pixels = values.reshape(-1, values.shape[-1]).astype(np.float64) / 255.0
        reduce = {"min": pixels.min(0), "max": pixels.max(0), "mean": pixels.mean(0), "std": pixels.std(0)}
        stats = {name: value.reshape(-1, 1, 1) for name, value in reduce.items()}
    else:
        data = values.astype(np.float64).reshape(len(values), -1)
        shape = values.shape[1:] or (1,)
        stats = {
            "min": data.min(0).reshape(shape),
            "max": data.max(0).reshape(shape),
            "mean": data.mean(0).reshape(shape),
            "std": data.std(0).reshape(shape),
        }
    stats["count"] = np.asarray([len(values)])
    return stats


def _merge_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stats of the union of the frames behind ``parts`` (pooled mean and variance)."""
    counts = np.asarray([float(part["count"][0]) for part in parts])
    weights = (counts / counts.sum()).reshape(-1, *([1] * parts[0]["mean"].ndim))
    means = np.stack([part["mean"] for part in parts])
    mean = (weights * means).sum(0)
    variance = (weights * (np.stack([part["std"] for part in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min([part["min"] for part in parts], axis=0),
        "max": np.max([part["max"] for part in parts], axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.asarray([int(counts.sum())]),
    }


def _json_stats(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    return {key: {name: value.tolist() for name, value in entry.items()} for key, entry in stats.items()}


class LeRobotWriter:
    """Writes episodes into a new LeRobot dataset at ``root``; :meth:`close` writes the metadata.

    Args:
        root: the dataset directory; must not exist unless ``overwrite``.
        fps: frames per second of every episode.
        features: LeRobot feature specs of the dataset's own keys: ``dtype``
            (``"video"`` for cameras, or a numpy dtype name) and ``shape``
            (cameras ``[H, W, 3]``, scalars ``[1]``), optional ``names``.
        version: ``"v3.0"`` (many episodes per file) or ``"v2.1"`` (a file per episode).
        robot_type: stored in ``info.json``.
        video: how cameras are encoded.
        episodes_per_file: v3.0 only: episodes per data and video file before the next file starts.

    Raises:
        InputError: bad features, ``root`` exists, or (in :meth:`add_episode`) arrays that
            do not match the features; messages name the key.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fps: int,
        features: Mapping[str, Mapping[str, Any]],
        version: str = V30,
        robot_type: str | None = None,
        video: VideoSettings = DEFAULT_VIDEO,
        episodes_per_file: int = 1000,
        overwrite: bool = False,
    ) -> None:
        import_pyarrow()
        if version not in (V21, V30):
            raise InputError(f"LeRobotWriter version should be {V30!r} or {V21!r}, got {version!r}")
        if int(fps) != fps or fps <= 0:
            raise InputError(f"fps should be a positive integer, got {fps}")
        if episodes_per_file < 1:
            raise InputError(f"episodes_per_file should be >= 1, got {episodes_per_file}")
        self.root = Path(root)
        self.fps = int(fps)
        self.version = version
        self.robot_type = robot_type
        self.video = video
        self.episodes_per_file = episodes_per_file
        self.features = self._check_features(features)
        self.video_keys = [key for key, feature in self.features.items() if feature["dtype"] == "video"]
        for key in self.video_keys:
            height, width, _ = self.features[key]["shape"]
            if video.encoder()[1] == "yuv420p" and (height % 2 or width % 2):
                raise InputError(
                    f"video feature {key!r} is {height}x{width}; yuv420p needs even sizes "
                    "(use VideoSettings(codec='lossless') for odd sizes)"
                )
        self.tasks: dict[str, int] = {}
        self.total_frames = 0
        self._episodes: list[dict[str, Any]] = []
        self._episode_stats: list[dict[str, dict[str, np.ndarray]]] = []
        self._file = (0, 0)  # v3.0: (chunk, file) being written
        self._episodes_in_file = 0
        self._parquet: Any = None
        self._videos: dict[str, _VideoWriter] = {}
        self._video_codec: str | None = None
        self._closed = False
        if self.root.exists():
            if not overwrite:
                raise InputError(f"{str(self.root)!r} already exists; pass overwrite=True to replace it")
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)

    @staticmethod
    def _check_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        checked = {}
        for key, feature in features.items():
            if key in DEFAULT_FEATURES or key == "task":
                raise InputError(f"feature {key!r} is written by LeRobotWriter itself; leave it out")
            if "dtype" not in feature or "shape" not in feature:
                raise InputError(f"feature {key!r} needs 'dtype' and 'shape', got {sorted(feature)}")
            dtype, shape = feature["dtype"], _feature_shape(feature)
            if dtype == "video":
                if len(shape) != 3 or shape[2] != 3:
                    raise InputError(f"video feature {key!r} should have shape [H, W, 3], got {list(shape)}")
            elif dtype not in _ARROW_TYPES:
                raise InputError(f"feature {key!r} has dtype {dtype!r}; expected 'video' or one of {_ARROW_TYPES}")
            checked[key] = {"dtype": dtype, "shape": list(shape), "names": feature.get("names")}
        return checked

    # -- episodes ------------------------------------------------------------------

    def add_episode(self, frames: Mapping[str, Any], task: str) -> int:
        """Append one episode; returns its ``episode_index``.

        Args:
            frames: feature key -> ``[T, *shape]`` array, the same T for every key.
            task: the episode's task text (the prompt).
        """
        if self._closed:
            raise InputError("LeRobotWriter is closed")
        arrays = self._check_episode(frames)
        length = len(next(iter(arrays.values())))
        episode_index = len(self._episodes)
        task_index = self.tasks.setdefault(str(task), len(self.tasks))
        start = self.total_frames
        columns = dict(arrays)
        columns["timestamp"] = (np.arange(length) / self.fps).astype(np.float32)
        columns["frame_index"] = np.arange(length, dtype=np.int64)
        columns["episode_index"] = np.full(length, episode_index, dtype=np.int64)
        columns["index"] = np.arange(start, start + length, dtype=np.int64)
        columns["task_index"] = np.full(length, task_index, dtype=np.int64)

        features = {**self.features, **DEFAULT_FEATURES}
        stats = {key: _stats(values, image=features[key]["dtype"] == "video") for key, values in columns.items()}
        meta: dict[str, Any] = {"episode_index": episode_index, "tasks": [str(task)], "length": length}
        if self.version == V30:
            meta.update(self._write_v30(columns, length, features))
        else:
            self._write_v21(columns, episode_index, features)
        self._episodes.append(meta)
        self._episode_stats.append(stats)
        self.total_frames += length
        return episode_index

    def _check_episode(self, frames: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = sorted(set(self.features) - set(frames))
        extra = sorted(set(frames) - set(self.features))
        if missing or extra:
            raise InputError(
                f"episode keys should be the features {sorted(self.features)}; missing {missing}, extra {extra}"
            )
        arrays, lengths = {}, {}
        for key, feature in self.features.items():
            array = np.asarray(frames[key])
            shape = tuple(feature["shape"])
            if array.ndim == 0 or (array.shape[1:] != shape and not (shape == (1,) and array.ndim == 1)):
                raise InputError(
                    f"episode[{key!r}] should have shape [T, {', '.join(map(str, shape))}], got {list(array.shape)}"
                )
            if feature["dtype"] == "video" and array.dtype != np.uint8:
                raise InputError(f"episode[{key!r}] should be uint8 HWC frames, got dtype {array.dtype}")
            if feature["dtype"] != "video" and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise InputError(f"episode[{key!r}] has NaN or inf values")
            arrays[key] = array if feature["dtype"] == "video" else array.reshape(len(array), *shape)
            lengths[key] = len(array)
        if len(set(lengths.values())) != 1:
            raise InputError(f"every key of an episode should have the same number of frames, got {lengths}")
        if next(iter(lengths.values())) == 0:
            raise InputError("an episode needs at least one frame")
        return arrays

    def _table(self, columns: Mapping[str, np.ndarray], features: Mapping[str, Mapping[str, Any]]) -> Any:
        import pyarrow as pa

        names = [key for key in features if features[key]["dtype"] != "video"]
        return pa.table({key: _arrow_column(columns[key], features[key]) for key in names})

    def _open_videos(self, relative: dict[str, str]) -> None:
        for key in self.video_keys:
            height, width, _ = self.features[key]["shape"]
            self._videos[key] = _VideoWriter(self.root / relative[key], self.fps, height, width, self.video)
            self._video_codec = self._videos[key].codec

    def _write_v30(self, columns: Mapping[str, np.ndarray], length: int, features: Mapping[str, Any]) -> dict[str, Any]:
        pq = import_pyarrow()
        if self._episodes_in_file == self.episodes_per_file:
            self._close_files()
            chunk, file = self._file
            self._file = (chunk + 1, 0) if file + 1 == DEFAULT_CHUNKS_SIZE else (chunk, file + 1)
            self._episodes_in_file = 0
        chunk, file = self._file
        table = self._table(columns, features)
        if self._parquet is None:
            path = self.root / DATA_PATH[V30].format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._parquet = pq.ParquetWriter(path, table.schema, **PARQUET_WRITE_OPTIONS)
            self._open_videos(
                {
                    key: VIDEO_PATH[V30].format(video_key=key, chunk_index=chunk, file_index=file)
                    for key in self.video_keys
                }
            )
        self._parquet.write_table(table)
        meta: dict[str, Any] = {
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": self.total_frames,
            "dataset_to_index": self.total_frames + length,
        }
        for key, video in self._videos.items():
            first = video.frames
            video.write(columns[key])
            meta[f"videos/{key}/chunk_index"] = chunk
            meta[f"videos/{key}/file_index"] = file
            meta[f"videos/{key}/from_timestamp"] = first / self.fps
            meta[f"videos/{key}/to_timestamp"] = video.frames / self.fps
        self._episodes_in_file += 1
        return meta

    def _write_v21(self, columns: Mapping[str, np.ndarray], episode_index: int, features: Mapping[str, Any]) -> None:
        pq = import_pyarrow()
        chunk = episode_index // DEFAULT_CHUNKS_SIZE
        path = self.root / DATA_PATH[V21].format(episode_chunk=chunk, episode_index=episode_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self._table(columns, features), path, **PARQUET_WRITE_OPTIONS)
        self._open_videos(
            {
                key: VIDEO_PATH[V21].format(episode_chunk=chunk, video_key=key, episode_index=episode_index)
                for key in self.video_keys
            }
        )
        for key, video in self._videos.items():
            video.write(columns[key])
        self._close_files()

    def _close_files(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        for video in self._videos.values():
            video.close()
        self._videos = {}

    # -- metadata ---------------------------------------------------------------------

    def close(self) -> Path:
        """Finish the open files and write the metadata; returns ``root``."""
        if self._closed:
            return self.root
        self._closed = True
        self._close_files()
        if not self._episodes:
            raise InputError(f"no episodes were added to {str(self.root)!r}")
        (self.root / "meta").mkdir(exist_ok=True)
        if self.version == V30:
            self._write_v30_meta()
        else:
            self._write_v21_meta()
        (self.root / INFO_PATH).write_text(json.dumps(self._info(), indent=4))
        return self.root

    def __enter__(self) -> "LeRobotWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Close the open files without writing metadata (the directory is left incomplete)."""
        self._closed = True
        self._close_files()

    def _info(self) -> dict[str, Any]:
        features: dict[str, Any] = {}
        for key, feature in self.features.items():
            features[key] = dict(feature)
            if feature["dtype"] == "video":
                height, width, channels = feature["shape"]
                features[key]["names"] = feature["names"] or ["height", "width", "channels"]
                features[key]["info"] = {
                    "video.height": height,
                    "video.width": width,
                    "video.codec": {"libx264": "h264", "libx264rgb": "h264"}.get(self._video_codec or "", "av1"),
                    "video.pix_fmt": self.video.encoder()[1],
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": channels,
                    "has_audio": False,
                }
        features.update(DEFAULT_FEATURES)
        info: dict[str, Any] = {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
        }
        if self.version == V21:
            info["total_videos"] = len(self._episodes) * len(self.video_keys)
            info["total_chunks"] = (len(self._episodes) - 1) // DEFAULT_CHUNKS_SIZE + 1
        info.update(
            {
                "chunks_size": DEFAULT_CHUNKS_SIZE,
                "fps": self.fps,
                "splits": {"train": f"0:{len(self._episodes)}"},
                "data_path": DATA_PATH[self.version],
                "video_path": VIDEO_PATH[self.version] if self.video_keys else None,
                "features": features,
            }
        )
        if self.version == V30:
            info["data_files_size_in_mb"] = 100
            info["video_files_size_in_mb"] = 500
        return info

    def _merged_stats(self) -> dict[str, dict[str, np.ndarray]]:
        return {key: _merge_stats([stats[key] for stats in self._episode_stats]) for key in self._episode_stats[0]}

    def _write_v30_meta(self) -> None:
        import pyarrow as pa

        pq = import_pyarrow()
        rows = []
        for meta, stats in zip(self._episodes, self._episode_stats, strict=True):
            row = dict(meta)
            for key, entry in stats.items():
                for name, value in entry.items():
                    row[f"stats/{key}/{name}"] = value.tolist()
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            rows.append(row)
        path = self.root / EPISODES_V30_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path, **PARQUET_WRITE_OPTIONS)

        tasks = sorted(self.tasks.items(), key=lambda item: item[1])
        table = pa.table(
            {
                "task_index": pa.array([index for _, index in tasks], type=pa.int64()),
                "task": pa.array([task for task, _ in tasks], type=pa.string()),
            }
        )
        # pandas metadata makes "task" the index, as LeRobot's own pandas-written file has it.
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [
                {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
            ],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": "task",
                    "field_name": "task",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.0",
        }
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        pq.write_table(table, self.root / TASKS_PARQUET_PATH, **PARQUET_WRITE_OPTIONS)
        (self.root / STATS_PATH).write_text(json.dumps(_json_stats(self._merged_stats()), indent=4))

    def _write_v21_meta(self) -> None:
        def lines(rows: list[dict[str, Any]]) -> str:
            return "".join(json.dumps(row) + "\n" for row in rows)

        (self.root / EPISODES_JSONL_PATH).write_text(lines(self._episodes))
        tasks = sorted(self.tasks.items(), key=lambda item: item[1])
        (self.root / TASKS_JSONL_PATH).write_text(lines([{"task_index": index, "task": task} for task, index in tasks]))
        episode_stats = [
            {"episode_index": meta["episode_index"], "stats": _json_stats(stats)}
            for meta, stats in zip(self._episodes, self._episode_stats, strict=True)
        ]
        (self.root / EPISODES_STATS_JSONL_PATH).write_text(lines(episode_stats))
