"""Each recording format converts into a LeRobot v3.0 dataset that loads back unchanged."""

import io
import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

import av

from openpi_core.data import LeRobotDataset, VideoSettings
from openpi_core.data.convert import convert_dataset, lerobot_keys
from openpi_core.errors import InputError
from openpi_core.schema import ArraySpec
from openpi_core.specs import AbstractEmbodiment
from openpi_core.transforms import Group, RepackTransform

LOSSLESS = VideoSettings(codec="lossless")


class Arm(AbstractEmbodiment):
    """ALOHA-like robot keys with a one-camera repack, like the ALOHA sim layout."""

    name = "arm"
    description = "test arm"
    action_dim = 3
    observation_schema = {
        "images/cam_high": ArraySpec((None, None, 3), "u"),
        "images/cam_left_wrist": ArraySpec((None, None, 3), "u", required=False),
        "state": ArraySpec((3,)),
        "actions": ArraySpec((None, 3), required=False),
    }

    def transforms(self, model_family):
        return Group()

    def repack_transforms(self):
        return Group(
            inputs=[
                RepackTransform(
                    {
                        "images": {"cam_high": "observation.images.top"},
                        "state": "observation.state",
                        "actions": "action",
                    }
                )
            ]
        )

    def example(self, seed=0):
        return {}


class Libero(Arm):
    """LIBERO's robot keys and LeRobot names (the default robomimic mapping is LIBERO's)."""

    name = "libero"
    action_dim = 7
    observation_schema = {
        "observation/image": ArraySpec((None, None, 3), "u"),
        "observation/wrist_image": ArraySpec((None, None, 3), "u"),
        "observation/state": ArraySpec((8,)),
        "actions": ArraySpec((None, 7), required=False),
    }

    def repack_transforms(self):
        return Group(
            inputs=[
                RepackTransform(
                    {
                        "observation/image": "image",
                        "observation/wrist_image": "wrist_image",
                        "observation/state": "state",
                        "actions": "actions",
                        "prompt": "prompt",
                    }
                )
            ]
        )


def frames(rng, count, size=(12, 16)):
    return rng.integers(0, 256, (count, *size, 3), dtype=np.uint8)


def jpeg(image):
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "yuvj420p"
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in codec.encode(frame) + codec.encode(None))


def decoded(data):
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_lerobot_names_come_from_the_repack():
    assert lerobot_keys(Arm()) == {
        "images/cam_high": "observation.images.top",
        "state": "observation.state",
        "actions": "action",
    }
    assert "prompt" not in lerobot_keys(Libero())


def test_aloha_hdf5_raw_and_jpeg_cameras(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    episodes = []
    for index, length in enumerate((4, 3)):
        high, wrist = frames(rng, length), frames(rng, length)
        blobs = [jpeg(image) for image in wrist]
        padded = np.zeros((length, max(map(len, blobs)) + 7), np.uint8)  # ALOHA pads the JPEG bytes
        for row, blob in zip(padded, blobs, strict=True):
            row[: len(blob)] = np.frombuffer(blob, np.uint8)
        qpos, action = rng.normal(size=(length, 3)), rng.normal(size=(length, 3))
        with h5py.File(raw / f"episode_{index}.hdf5", "w") as file:
            file["observations/qpos"] = qpos
            file["action"] = action
            file["observations/images/cam_high"] = high
            file["observations/images/cam_left_wrist"] = padded
        episodes.append((high, [decoded(blob) for blob in blobs], qpos, action))

    out = convert_dataset("aloha-hdf5", raw, tmp_path / "ds", embodiment=Arm(), task="stack", video=LOSSLESS)
    ds = LeRobotDataset(out)
    assert ds.fps == 50 and ds.tasks == {0: "stack"} and len(ds) == 7
    assert set(ds.camera_keys) == {"observation.images.top", "observation.images.cam_left_wrist"}
    item = ds[5]  # episode 1, frame 1
    high, wrist, qpos, action = episodes[1]
    np.testing.assert_array_equal(item["observation.images.top"], high[1])
    np.testing.assert_array_equal(item["observation.images.cam_left_wrist"], wrist[1])
    np.testing.assert_allclose(item["observation.state"], qpos[1].astype(np.float32))
    np.testing.assert_allclose(item["action"], action[1].astype(np.float32))
    assert json.loads((out / "meta" / "info.json").read_text())["robot_type"] == "arm"


def test_robomimic_with_libero_mapping(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(1)
    path = tmp_path / "demo.hdf5"
    demos = {}
    with h5py.File(path, "w") as file:
        file.create_group("data").attrs["problem_info"] = json.dumps({"language_instruction": "open the drawer"})
        for name, length in (("demo_10", 2), ("demo_2", 3)):  # numeric order: demo_2 first
            group = file.create_group(f"data/{name}")
            demo = {
                "obs/agentview_rgb": frames(rng, length),
                "obs/eye_in_hand_rgb": frames(rng, length),
                "obs/ee_pos": rng.normal(size=(length, 3)),
                "obs/ee_ori": rng.normal(size=(length, 3)),
                "obs/gripper_states": rng.normal(size=(length, 2)),
                "actions": rng.normal(size=(length, 7)),
                "states": rng.normal(size=(length, 40)),
            }
            for key, value in demo.items():
                group[key] = value
            demos[name] = demo

    ds = LeRobotDataset(convert_dataset("robomimic", path, tmp_path / "ds", embodiment=Libero(), video=LOSSLESS))
    assert ds.fps == 20 and ds.tasks == {0: "open the drawer"} and len(ds) == 5
    first = demos["demo_2"]
    item = ds[1]
    # LIBERO renders upside down; the converter turns the frames around.
    np.testing.assert_array_equal(item["image"], first["obs/agentview_rgb"][1, ::-1, ::-1])
    np.testing.assert_array_equal(item["wrist_image"], first["obs/eye_in_hand_rgb"][1, ::-1, ::-1])
    state = np.concatenate([first["obs/ee_pos"][1], first["obs/ee_ori"][1], first["obs/gripper_states"][1]])
    np.testing.assert_allclose(item["state"], state.astype(np.float32))
    np.testing.assert_allclose(item["actions"], first["actions"][1].astype(np.float32))
    assert int(ds[4]["episode_index"]) == 1


def test_npz_folder_with_tasks_per_episode(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw"
    raw.mkdir()
    stored = []
    for index, task in enumerate(("wave", "bow")):
        episode = {
            "images/cam_high": frames(rng, 3),
            "state": rng.normal(size=(3, 3)),
            "actions": rng.normal(size=(3, 3)),
        }
        np.savez(raw / f"ep{index}.npz", task=np.array(task), **episode)
        stored.append(episode)
    with pytest.raises(InputError, match="does not say its frame rate"):
        convert_dataset("npz", raw, tmp_path / "nofps", embodiment=Arm())
    ds = LeRobotDataset(convert_dataset("npz", raw, tmp_path / "ds", embodiment=Arm(), fps=15, video=LOSSLESS))
    assert ds.fps == 15 and ds.tasks == {0: "wave", 1: "bow"}
    assert ds[4]["task"] == "bow"
    np.testing.assert_array_equal(ds[4]["observation.images.top"], stored[1]["images/cam_high"][1])
    np.testing.assert_allclose(ds[4]["observation.state"], stored[1]["state"][1].astype(np.float32))


def test_episode_that_does_not_fit_the_robot_names_file_and_key(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(3)
    np.savez(
        raw / "bad.npz", **{"images/cam_high": frames(rng, 2), "state": np.zeros((2, 5)), "actions": np.zeros((2, 3))}
    )
    with pytest.raises(InputError, match=r"bad.npz: .*'state'.*\[3\]"):
        convert_dataset("npz", raw, tmp_path / "ds", embodiment=Arm(), fps=10, task="t")
    with pytest.raises(InputError, match="no default robomimic mapping for embodiment 'arm'"):
        convert_dataset("robomimic", raw, tmp_path / "ds2", embodiment=Arm())
