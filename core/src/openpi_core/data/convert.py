"""Convert raw robot recordings into LeRobot v3.0 datasets that an embodiment can train on.

Every reader yields episodes in the embodiment's own observation keys (its robot
layout: ``images/cam_high``, ``state``, ``actions`` for ALOHA; ``observation/image``,
``observation/state``, ``actions`` for LIBERO). The embodiment's LeRobot repack
mapping, read backwards, then names the dataset's features, so
``embodiment.repack_transforms()`` reads the converted dataset unchanged. Robot keys
the repack does not mention keep a LeRobot-style name: ``observation.`` plus the
key with ``/`` turned into ``.`` (ALOHA's ``images/cam_low`` becomes
``observation.images.cam_low``).

Formats:

* ``robomimic``: one HDF5 file with ``data/demo_N/{obs/<key>, actions, states}``
  (cameras as raw ``[T, H, W, 3]`` uint8);
  a :class:`RobomimicMapping` says which datasets make each robot key (LIBERO has a
  default). The task comes from ``--task`` or the file's ``data.attrs["problem_info"]``
  ``language_instruction`` (LIBERO files have it).
* ``aloha-hdf5``: a folder of ALOHA episodes ``*.hdf5`` with ``/observations/qpos``
  ``[T, 14]``, ``/observations/images/<camera>`` (``[T, H, W, 3]`` uint8, or JPEG/PNG
  bytes per frame) and ``/action`` ``[T, 14]``.
* ``npz``: a folder of ``*.npz`` files, one episode each, whose arrays are named by
  robot key (``images/cam_high``, ``state``, ``actions``) with a leading time axis,
  and optionally a string ``task`` (or ``prompt``).

HDF5 is read with h5py (``pip install h5py``), imported on use.
"""

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.data.lerobot import V30, decode_image_bytes
from openpi_core.data.writer import DEFAULT_VIDEO, LeRobotWriter, VideoSettings
from openpi_core.errors import InputError
from openpi_core.schema import flatten_dict
from openpi_core.specs import AbstractEmbodiment
from openpi_core.transforms import RepackTransform

FORMATS = ("robomimic", "aloha-hdf5", "npz")
DEFAULT_FPS = {"robomimic": 20, "aloha-hdf5": 50}
"""Recording rate of each format when not given: robomimic/LIBERO record at 20 Hz, ALOHA at 50 Hz."""


@attrs.frozen
class RawEpisode:
    """One recorded episode in robot keys: key -> ``[T, ...]``, and its task if the source names one."""

    frames: dict[str, np.ndarray]
    task: str | None
    source: str


@attrs.frozen
class RobomimicMapping:
    """How a robomimic demo group becomes robot keys.

    Attributes:
        keys: robot key -> HDF5 datasets under ``data/demo_N`` whose last axes are
            concatenated (``("obs/ee_pos", "obs/ee_ori", "obs/gripper_states")``).
        rotate_images_180: turn camera frames upside down and mirror them (LIBERO's
            simulator renders them so; openpi's LIBERO data and client rotate them back).
    """

    keys: Mapping[str, tuple[str, ...]] = attrs.field(converter=lambda keys: {k: tuple(v) for k, v in keys.items()})
    rotate_images_180: bool = False


ROBOMIMIC_MAPPINGS: dict[str, RobomimicMapping] = {
    "libero": RobomimicMapping(
        {
            "observation/image": ("obs/agentview_rgb",),
            "observation/wrist_image": ("obs/eye_in_hand_rgb",),
            "observation/state": ("obs/ee_pos", "obs/ee_ori", "obs/gripper_states"),
            "actions": ("actions",),
        },
        rotate_images_180=True,
    ),
}
"""Default robomimic mappings by embodiment name."""


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise InputError("converting HDF5 recordings needs h5py: pip install h5py") from error
    return h5py


def _is_camera(array: np.ndarray) -> bool:
    return array.ndim == 4 and array.dtype == np.uint8 and (array.shape[-1] == 3 or array.shape[1] == 3)


def _hwc(frames: np.ndarray) -> np.ndarray:
    """Camera frames ``[T, H, W, 3]`` or ``[T, 3, H, W]`` as ``[T, H, W, 3]``."""
    if frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = np.moveaxis(frames, 1, -1)
    return np.ascontiguousarray(frames)


def _decode_frames(data: Any, where: str) -> np.ndarray:
    """An HDF5 camera dataset: raw ``[T, H, W, 3]`` uint8, or one encoded image (bytes) per frame."""
    array = np.asarray(data[()])
    if array.ndim == 4:
        return array
    if array.ndim == 2 and array.dtype == np.uint8:
        return np.stack([decode_image_bytes(row.tobytes(), f"{where} frame {t}") for t, row in enumerate(array)])
    if array.ndim == 1:
        return np.stack([decode_image_bytes(bytes(row), f"{where} frame {t}") for t, row in enumerate(array)])
    raise InputError(f"{where} should be [T, H, W, 3] uint8 frames or encoded images, got shape {list(array.shape)}")


def read_robomimic(path: str | Path, mapping: RobomimicMapping) -> Iterator[RawEpisode]:
    """Episodes of a robomimic HDF5 file (``data/demo_N``), in the order of N."""
    h5py = _import_h5py()
    path = Path(path)
    with h5py.File(path, "r") as file:
        if "data" not in file:
            raise InputError(f"robomimic file {str(path)!r} has no 'data' group; got {sorted(file)}")
        data = file["data"]
        task = _robomimic_task(data.attrs.get("problem_info"))
        demos = sorted(
            data, key=lambda name: (int(name.rpartition("_")[2]) if name.rpartition("_")[2].isdigit() else 0, name)
        )
        for demo in demos:
            group = data[demo]
            frames = {}
            for robot_key, sources in mapping.keys.items():
                parts = []
                for source in sources:
                    if source not in group:
                        raise InputError(f"{path.name}: data/{demo} has no {source!r} (needed for {robot_key!r})")
                    parts.append(np.asarray(group[source][()]))
                array = parts[0] if len(parts) == 1 else np.concatenate([p.reshape(len(p), -1) for p in parts], axis=-1)
                if _is_camera(array):
                    array = _hwc(array)
                    if mapping.rotate_images_180:
                        array = np.ascontiguousarray(array[:, ::-1, ::-1])
                frames[robot_key] = array
            yield RawEpisode(frames, task, f"{path.name}:data/{demo}")


def _robomimic_task(problem_info: Any) -> str | None:
    if problem_info is None:
        return None
    if isinstance(problem_info, bytes):
        problem_info = problem_info.decode()
    try:
        info = json.loads(str(problem_info))
    except json.JSONDecodeError:
        return None
    instruction = info.get("language_instruction") if isinstance(info, dict) else None
    if isinstance(instruction, list):
        instruction = " ".join(str(word) for word in instruction)
    return None if instruction is None else str(instruction)


def read_aloha_hdf5(folder: str | Path) -> Iterator[RawEpisode]:
    """ALOHA episodes, one per ``*.hdf5`` file in ``folder`` (sorted by name), in ALOHA's robot keys."""
    h5py = _import_h5py()
    files = _episode_files(folder, ("*.hdf5", "*.h5"))
    for path in files:
        with h5py.File(path, "r") as file:
            for key in ("observations/qpos", "action", "observations/images"):
                if key not in file:
                    raise InputError(f"ALOHA episode {path.name} lacks /{key}")
            frames = {"state": np.asarray(file["observations/qpos"][()]), "actions": np.asarray(file["action"][()])}
            for camera in sorted(file["observations/images"]):
                if "depth" in camera:
                    continue
                images = _decode_frames(
                    file[f"observations/images/{camera}"], f"{path.name}: /observations/images/{camera}"
                )
                frames[f"images/{camera}"] = _hwc(images)
        yield RawEpisode(frames, None, path.name)


def read_npz(folder: str | Path) -> Iterator[RawEpisode]:
    """Episodes from ``*.npz`` files in ``folder`` (sorted by name), arrays named by robot key."""
    for path in _episode_files(folder, ("*.npz",)):
        with np.load(path, allow_pickle=False) as file:
            arrays = {key: np.asarray(file[key]) for key in file.files}
        task = None
        for key in ("task", "prompt"):
            if key in arrays:
                task = str(arrays.pop(key).item())
        arrays.pop("fps", None)
        frames = {key: _hwc(value) if _is_camera(value) else value for key, value in arrays.items()}
        yield RawEpisode(frames, task, path.name)


def _episode_files(folder: str | Path, patterns: Sequence[str]) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} should be a folder of episode files ({', '.join(patterns)})")
    files = sorted({path for pattern in patterns for path in folder.glob(pattern)})
    if not files:
        raise InputError(f"{str(folder)!r} has no episode files matching {list(patterns)}")
    return files


def lerobot_keys(embodiment: AbstractEmbodiment) -> dict[str, str]:
    """Robot key -> LeRobot feature name, from the embodiment's repack (read backwards)."""
    for transform in embodiment.repack_transforms().inputs:
        if isinstance(transform, RepackTransform):
            return {robot: lerobot for robot, lerobot in flatten_dict(transform.structure).items() if robot != "prompt"}
    return {}


def lerobot_name(robot_key: str, names: Mapping[str, str]) -> str:
    """The feature name of ``robot_key``: the repack's, else ``observation.`` + the key with dots."""
    return names.get(robot_key, "observation." + robot_key.replace("/", "."))


def _check_episode(episode: RawEpisode, embodiment: AbstractEmbodiment) -> None:
    lengths = {key: len(value) for key, value in episode.frames.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"{episode.source}: every array should have the same number of frames, got {lengths}")
    if "actions" not in episode.frames:
        raise InputError(f"{episode.source}: no 'actions'; got keys {sorted(episode.frames)}")
    first = {key: value[0] for key, value in episode.frames.items() if key != "actions"}
    first["actions"] = episode.frames["actions"][:1]
    try:
        embodiment.validate(_nest(first))
    except InputError as error:
        raise InputError(f"{episode.source}: {error}") from error


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"images/cam_high": x}`` -> ``{"images": {"cam_high": x}}``, as robot observations are nested."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out


def convert_dataset(
    format: str,
    src: str | Path,
    out: str | Path,
    *,
    embodiment: AbstractEmbodiment,
    task: str | None = None,
    fps: int | None = None,
    mapping: RobomimicMapping | None = None,
    video: VideoSettings = DEFAULT_VIDEO,
    overwrite: bool = False,
    progress: Callable[[RawEpisode], None] | None = None,
) -> Path:
    """Convert the recordings at ``src`` into a LeRobot v3.0 dataset at ``out``; returns ``out``.

    Args:
        format: one of :data:`FORMATS`.
        src: the robomimic HDF5 file, or the folder of ALOHA HDF5 / npz episodes.
        embodiment: whose robot keys the source uses and whose repack names the features.
        task: the prompt of every episode; overrides one stored in the source.
        fps: recording rate; default :data:`DEFAULT_FPS` of the format (required for npz).
        mapping: robomimic only; default :data:`ROBOMIMIC_MAPPINGS` of the embodiment.
        progress: called after each episode is written.

    Raises:
        InputError: an unknown format, an episode that does not match the embodiment's
            schema (the message names the file), no task, or ``out`` exists without ``overwrite``.
    """
    if format not in FORMATS:
        raise InputError(f"unknown recording format {format!r}; expected one of {FORMATS}")
    if Path(out).exists() and not overwrite:
        raise InputError(f"{str(out)!r} already exists; pass overwrite=True to replace it")
    fps = fps or DEFAULT_FPS.get(format)
    if fps is None:
        raise InputError(f"the {format} format does not say its frame rate; give fps")
    if format == "robomimic":
        mapping = mapping or ROBOMIMIC_MAPPINGS.get(embodiment.name)
        if mapping is None:
            raise InputError(
                f"no default robomimic mapping for embodiment {embodiment.name!r} "
                f"(defaults exist for {sorted(ROBOMIMIC_MAPPINGS)}); give one"
            )
        episodes = read_robomimic(src, mapping)
    elif format == "aloha-hdf5":
        episodes = read_aloha_hdf5(src)
    else:
        episodes = read_npz(src)

    names = lerobot_keys(embodiment)
    writer: LeRobotWriter | None = None
    try:
        for episode in episodes:
            _check_episode(episode, embodiment)
            episode_task = task or episode.task
            if not episode_task:
                raise InputError(f"{episode.source}: no task; give one (the source names none)")
            frames = {lerobot_name(key, names): value for key, value in episode.frames.items()}
            if writer is None:
                features = {
                    name: {"dtype": "video", "shape": list(value.shape[1:])}
                    if _is_camera(value)
                    else {"dtype": "float32", "shape": list(value.shape[1:]) or [1]}
                    for name, value in frames.items()
                }
                writer = LeRobotWriter(
                    out,
                    fps=fps,
                    features=features,
                    version=V30,
                    robot_type=embodiment.name,
                    video=video,
                    overwrite=overwrite,
                )
            writer.add_episode(
                {name: value if _is_camera(value) else value.astype(np.float32) for name, value in frames.items()},
                task=episode_task,
            )
            if progress is not None:
                progress(episode)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise InputError(f"{str(src)!r} holds no episodes")
    return writer.close()
