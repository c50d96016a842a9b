"""LeRobot datasets written by our writer (v2.1 and v3.0) read back frame for frame."""

import json
import pickle
import re

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from openpi_core.data import LeRobotDataset, LeRobotWriter, VideoSettings
from openpi_core.data.testing import make_synthetic_dataset, synthetic_action_map, synthetic_episode
from openpi_core.errors import InputError

LENGTHS = (6, 3, 5)
CAMERAS = ("top", "left_wrist")
SIZE = (16, 24)
FPS = 10


def episodes():
    return [
        synthetic_episode(i, frames=n, cameras=CAMERAS, image_size=SIZE, state_dim=4, action_dim=3, seed=7)
        for i, n in enumerate(LENGTHS)
    ]


def write(root, version, codec, **kwargs):
    return make_synthetic_dataset(
        root,
        episodes=len(LENGTHS),
        frames_per_episode=LENGTHS,
        cameras=CAMERAS,
        image_size=SIZE,
        state_dim=4,
        action_dim=3,
        fps=FPS,
        version=version,
        seed=7,
        task=["pick", "place"],
        video=VideoSettings(codec=codec),
        **kwargs,
    )


@pytest.fixture(scope="module", params=["v2.1", "v3.0"])
def lossless(request, tmp_path_factory):
    # Two episodes per file in v3.0, so reading crosses data and video files.
    extra = {"episodes_per_file": 2} if request.param == "v3.0" else {}
    return write(tmp_path_factory.mktemp(request.param) / "ds", request.param, "lossless", **extra)


def test_frames_states_actions_and_metadata_round_trip_exactly(lossless):
    ds = LeRobotDataset(lossless)
    expected = episodes()
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == 3 and ds.fps == FPS
    assert ds.camera_keys == ("observation.images.top", "observation.images.left_wrist")
    assert ds.tasks == {0: "pick", 1: "place"}
    index = 0
    for episode_index, episode in enumerate(expected):
        for frame in range(LENGTHS[episode_index]):
            item = ds[index]
            assert item["observation.images.top"].shape == (*SIZE, 3)
            assert item["observation.images.top"].dtype == np.uint8
            np.testing.assert_array_equal(item["observation.images.top"], episode["images/top"][frame])
            np.testing.assert_array_equal(item["observation.images.left_wrist"], episode["images/left_wrist"][frame])
            np.testing.assert_array_equal(item["observation.state"], episode["state"][frame])
            np.testing.assert_array_equal(item["action"], episode["action"][frame])
            assert int(item["episode_index"]) == episode_index and int(item["frame_index"]) == frame
            assert int(item["index"]) == index
            assert item["timestamp"] == np.float32(frame / FPS)
            assert item["task"] == ["pick", "place"][episode_index % 2]
            assert int(item["task_index"]) == episode_index % 2
            index += 1
    assert ds[-1]["frame_index"] == LENGTHS[-1] - 1
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_h264_frames_are_within_codec_tolerance(tmp_path):
    root = write(tmp_path / "ds", "v3.0", "h264")
    ds = LeRobotDataset(root)
    expected = episodes()
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.top"]["info"]["video.codec"] == "h264"
    # Random access: last episode first, then backwards.
    for index in reversed(range(len(ds))):
        episode, frame = _locate(index)
        decoded = ds[index]["observation.images.top"].astype(int)
        assert np.abs(decoded - expected[episode]["images/top"][frame]).mean() < 3


def test_av1_when_the_pyav_build_has_an_encoder(tmp_path):
    import av

    if not {"libsvtav1", "libaom-av1"} & set(av.codecs_available):
        pytest.skip("no AV1 encoder in this PyAV build")
    root = write(tmp_path / "ds", "v3.0", "av1")
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.top"]["info"]["video.codec"] == "av1"
    ds = LeRobotDataset(root)
    decoded = ds[4]["observation.images.left_wrist"].astype(int)
    assert np.abs(decoded - episodes()[0]["images/left_wrist"][4]).mean() < 3


def _locate(index):
    for episode, length in enumerate(LENGTHS):
        if index < length:
            return episode, index
        index -= length
    raise AssertionError(index)


def test_action_chunks_pad_at_episode_end_with_the_last_frame(lossless):
    ds = LeRobotDataset(lossless, action_horizon=4)
    actions = episodes()[1]["action"]  # 3 frames, at positions 6, 7, 8
    item = ds[7]  # frame 1 of episode 1: frames 1, 2, then 2 repeated twice
    assert item["action"].shape == (4, 3)
    np.testing.assert_array_equal(item["action"], actions[[1, 2, 2, 2]])
    np.testing.assert_array_equal(item["action_is_pad"], [False, False, True, True])
    np.testing.assert_array_equal(ds[6]["action"], actions[[0, 1, 2, 2]])
    first = ds[0]
    np.testing.assert_array_equal(first["action"], episodes()[0]["action"][:4])
    assert not first["action_is_pad"].any()
    # Only the action is chunked; the state stays one frame.
    assert first["observation.state"].shape == (4,)


def test_delta_timestamps_before_the_start_and_on_cameras(lossless):
    ds = LeRobotDataset(
        lossless, delta_timestamps={"observation.state": [-0.1, 0.0], "observation.images.top": [-0.2, 0.0, 0.1]}
    )
    states, images = episodes()[0]["state"], episodes()[0]["images/top"]
    item = ds[1]
    np.testing.assert_array_equal(item["observation.state"], states[[0, 1]])
    np.testing.assert_array_equal(item["observation.state_is_pad"], [False, False])
    assert item["observation.images.top"].shape == (3, *SIZE, 3)
    np.testing.assert_array_equal(item["observation.images.top"], images[[0, 1, 2]])
    np.testing.assert_array_equal(item["observation.images.top_is_pad"], [True, False, False])


def test_any_access_order_with_a_tiny_frame_cache(lossless):
    """Seeks, continued decoding and cache evictions in a random order still give the right frames."""
    ds = LeRobotDataset(
        lossless,
        cache_mb=0.001,
        delta_timestamps={"observation.images.top": [0.0, 0.1, 0.2], "observation.images.left_wrist": [-0.1, 0.0]},
    )
    expected = episodes()
    for index in np.random.default_rng(0).permutation(len(ds)):
        episode, frame = _locate(int(index))
        last = LENGTHS[episode] - 1
        item = ds[int(index)]
        top = [min(frame + step, last) for step in (0, 1, 2)]
        wrist = [max(frame - 1, 0), frame]
        np.testing.assert_array_equal(item["observation.images.top"], expected[episode]["images/top"][top])
        np.testing.assert_array_equal(
            item["observation.images.left_wrist"], expected[episode]["images/left_wrist"][wrist]
        )


def test_actions_key_is_found_when_the_dataset_calls_it_actions(tmp_path):
    root = make_synthetic_dataset(
        tmp_path / "libero",
        episodes=1,
        frames_per_episode=3,
        cameras=(),
        state_dim=2,
        action_dim=2,
        fps=5,
        state_key="state",
        action_key="actions",
    )
    ds = LeRobotDataset(root, action_horizon=2)
    assert ds[2]["actions"].shape == (2, 2) and ds[2]["actions_is_pad"].tolist() == [False, True]


def test_synthetic_actions_follow_the_documented_map(lossless):
    matrix, bias = synthetic_action_map(4, 3)
    item = LeRobotDataset(lossless)[4]
    np.testing.assert_allclose(item["action"], matrix @ item["observation.state"] + bias, atol=1e-5)


def test_pickled_dataset_reads_the_same_in_a_fresh_state(lossless):
    ds = LeRobotDataset(lossless, action_horizon=2)
    before = ds[5]
    clone = pickle.loads(pickle.dumps(ds))
    after = clone[5]
    assert sorted(before) == sorted(after)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_decode_cameras_off_gives_placeholders(lossless):
    item = LeRobotDataset(lossless, decode_cameras=False)[0]
    assert item["observation.images.top"].shape == (1, 1, 3)


def test_images_stored_in_parquet_are_decoded(tmp_path):
    """LeRobot's ``image`` dtype (PNG bytes in the parquet, as in physical-intelligence/libero)."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = make_synthetic_dataset(tmp_path / "ds", episodes=2, frames_per_episode=2, cameras=(), state_dim=2, fps=5)
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 10, 3), dtype=np.uint8)
    encoded = []
    for frame in frames:
        codec = av.CodecContext.create("png", "w")
        codec.width, codec.height, codec.pix_fmt = 10, 8, "rgb24"
        packets = codec.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")) + codec.encode(None)
        encoded.append({"bytes": b"".join(bytes(p) for p in packets), "path": None})
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(table.append_column("image", pa.array(encoded, type=struct)), path, row_group_size=2)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["image"] = {"dtype": "image", "shape": [8, 10, 3], "names": ["height", "width", "channel"]}
    (root / "meta" / "info.json").write_text(json.dumps(info))

    ds = LeRobotDataset(root, cache_mb=0.0001)  # row groups of 2 frames, at most one cached
    assert ds.camera_keys == ("image",)
    for index in (3, 0, 2, 1):
        np.testing.assert_array_equal(ds[index]["image"], frames[index])


def test_writer_rejects_mismatched_episodes(tmp_path):
    features = {"observation.state": {"dtype": "float32", "shape": [3]}}
    with LeRobotWriter(tmp_path / "ds", fps=10, features=features) as writer:
        with pytest.raises(
            InputError, match=r"episode\['observation.state'\] should have shape \[T, 3\], got \[4, 2\]"
        ):
            writer.add_episode({"observation.state": np.zeros((4, 2))}, task="t")
        with pytest.raises(InputError, match=r"missing \['observation.state'\]"):
            writer.add_episode({}, task="t")
        writer.add_episode({"observation.state": np.zeros((4, 3))}, task="t")
    with pytest.raises(InputError, match="already exists"):
        LeRobotWriter(tmp_path / "ds", fps=10, features=features)
    odd = {"observation.images.top": {"dtype": "video", "shape": [5, 6, 3]}}
    with pytest.raises(InputError, match=r"'observation\.images\.top' is 5x6; yuv420p needs even sizes"):
        LeRobotWriter(tmp_path / "odd", fps=10, features=odd)
    assert not (tmp_path / "odd").exists()


def test_reader_errors_name_the_file_or_key(tmp_path, lossless):
    with pytest.raises(InputError, match=r"meta/info\.json is missing"):
        LeRobotDataset(tmp_path)
    with pytest.raises(InputError, match="'nope', which is not a feature"):
        LeRobotDataset(lossless, delta_timestamps={"nope": [0.0]})
    with pytest.raises(InputError, match="not a multiple of 1/fps"):
        LeRobotDataset(lossless, delta_timestamps={"action": [0.05]})
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v1.6", "fps": 10, "features": {}}))
    with pytest.raises(InputError, match=r"codebase_version should be one of .* got 'v1.6'"):
        LeRobotDataset(tmp_path)


def test_v30_metadata_matches_lerobot_layout(tmp_path):
    import pyarrow.parquet as pq

    root = write(tmp_path / "ds", "v3.0", "lossless", episodes_per_file=2)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 14
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    episodes_table = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    last = episodes_table[2]
    assert (last["data/file_index"], last["dataset_from_index"], last["dataset_to_index"]) == (1, 9, 14)
    assert last["videos/observation.images.top/from_timestamp"] == 0.0
    assert episodes_table[1]["videos/observation.images.top/from_timestamp"] == pytest.approx(0.6)
    assert episodes_table[1]["tasks"] == ["place"]
    tasks = pq.read_table(root / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == ["pick", "place"]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    states = np.concatenate([episode["state"] for episode in episodes()])
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(0), atol=1e-6)
    assert np.shape(stats["observation.images.top"]["mean"]) == (3, 1, 1)


# -- LeRobot's own tasks.parquet; damaged parquet files ----------------------------------


def low_dim_dataset(root, version="v3.0"):
    """Two episodes of states and actions, no cameras: quick to write and read."""
    return make_synthetic_dataset(
        root,
        episodes=2,
        frames_per_episode=3,
        cameras=(),
        state_dim=2,
        action_dim=2,
        fps=5,
        version=version,
        task=["pick", "place"],
    )


def test_v30_tasks_stored_as_the_pandas_index_as_lerobot_writes_them(tmp_path):
    """``pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(["pick", "place"])).to_parquet(path)``,
    built with pyarrow alone: the unnamed index is the column ``__index_level_0__`` and the
    schema's pandas metadata names it as the index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = low_dim_dataset(tmp_path / "ds")
    pandas_metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
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
                "name": None,
                "field_name": "__index_level_0__",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table(
        {"task_index": pa.array([0, 1], pa.int64()), "__index_level_0__": pa.array(["pick", "place"], pa.string())}
    ).replace_schema_metadata({b"pandas": json.dumps(pandas_metadata).encode()})
    pq.write_table(table, root / "meta" / "tasks.parquet")

    ds = LeRobotDataset(root)
    assert ds.tasks == {0: "pick", 1: "place"}
    assert [ds[i]["task"] for i in (0, 3)] == ["pick", "place"]


def test_tasks_parquet_without_the_task_text_still_names_what_it_has(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = low_dim_dataset(tmp_path / "ds")
    pq.write_table(pa.table({"task_index": [0, 1], "label": ["a", "b"]}), root / "meta" / "tasks.parquet")
    with pytest.raises(InputError, match=r"tasks\.parquet.*got \['task_index', 'label'\]"):
        LeRobotDataset(root)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_a_truncated_data_parquet_is_an_error_naming_the_file(tmp_path, version):
    root = low_dim_dataset(tmp_path / "ds", version)
    data = sorted((root / "data").rglob("*.parquet"))[0]
    data.write_bytes(data.read_bytes()[:-40])
    ds = LeRobotDataset(root)
    with pytest.raises(InputError, match=rf"{re.escape(str(data))}.*truncated or corrupt"):
        ds[0]


def test_flipped_bytes_in_a_data_parquet_are_caught_by_its_page_checksums(tmp_path, monkeypatch):
    root = low_dim_dataset(tmp_path / "ds")
    data = root / "data" / "chunk-000" / "file-000.parquet"
    original = LeRobotDataset(root)[0]["observation.state"]
    raw = bytearray(data.read_bytes())
    at = bytes(raw).find(np.float32(original[0]).tobytes())
    assert at > 0 and bytes(raw).count(np.float32(original[0]).tobytes()) == 1
    raw[at + 3] ^= 0x01  # one bit of the first state value, as a failing disk would flip it
    data.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=rf"{re.escape(str(data))}.*(CRC|checksum)"):
        LeRobotDataset(root)[0]
    # Without the check the changed value would be read as data.
    monkeypatch.setenv("OPENPI_SKIP_CHECKSUMS", "1")
    assert LeRobotDataset(root)[0]["observation.state"][0] != original[0]


def test_a_corrupt_video_stream_is_an_error_naming_the_file(tmp_path):
    root = make_synthetic_dataset(tmp_path / "ds", episodes=2, frames_per_episode=20, image_size=(32, 32), fps=10)
    video = sorted((root / "videos").rglob("*.mp4"))[0]
    data = bytearray(video.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0xFF for b in data[middle : middle + 200])
    video.write_bytes(bytes(data))
    ds = LeRobotDataset(root)
    with pytest.raises(InputError, match=rf"{re.escape(str(video))}"):
        for index in range(len(ds)):
            ds[index]
