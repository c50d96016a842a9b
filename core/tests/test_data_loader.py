"""The batch loader: seeded order, exact resume, and workers that change nothing."""

import collections
import itertools
import json
import threading

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from openpi_core.data import LeRobotDataset, collate, create_data_loader
from openpi_core.data.loader import _dumps
from openpi_core.data.oversample import EpisodeStartOversampling
from openpi_core.data.testing import make_synthetic_dataset
from openpi_core.errors import InputError
from openpi_core.transforms import PadStatesAndActions, RepackTransform, ResizeImages

# openpi's layout after the model transforms: image/image_mask/state + actions.
TRANSFORMS = [
    RepackTransform(
        {
            "image": {"base_0_rgb": "observation.images.top"},
            "image_mask": {"base_0_rgb": "action_is_pad"},
            "state": "observation.state",
            "actions": "action",
        }
    ),
    ResizeImages(8, 8),
    PadStatesAndActions(6),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_synthetic_dataset(
        tmp_path_factory.mktemp("loader") / "ds",
        episodes=3,
        frames_per_episode=[7, 5, 6],
        image_size=(12, 16),
        state_dim=4,
        action_dim=4,
        fps=10,
    )
    return LeRobotDataset(root, action_horizon=3)


def take(loader, count):
    return list(itertools.islice(iter(loader), count))


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert sorted(flat_a) == sorted(flat_b)
        for key in flat_a:
            np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_batches_have_the_training_layout(dataset):
    batch = next(iter(create_data_loader(dataset, TRANSFORMS, 4)))
    assert batch["image"]["base_0_rgb"].shape == (4, 8, 8, 3) and batch["image"]["base_0_rgb"].dtype == np.uint8
    assert batch["state"].shape == (4, 6) and batch["actions"].shape == (4, 3, 6)
    assert batch["image_mask"]["base_0_rgb"].shape == (4, 3)


def test_same_seed_same_batches_other_seed_other_order(dataset):
    first = take(create_data_loader(dataset, TRANSFORMS, 4, seed=3), 6)
    again = take(create_data_loader(dataset, TRANSFORMS, 4, seed=3), 6)
    other = take(create_data_loader(dataset, TRANSFORMS, 4, seed=4), 6)
    assert_batches_equal(first, again)
    assert any(not np.array_equal(a["state"], b["state"]) for a, b in zip(first, other, strict=True))


def test_epochs_visit_every_sample_once_in_a_new_order(dataset):
    loader = create_data_loader(dataset, [lambda sample: {"i": sample["index"]}], 6, seed=0)
    assert len(loader) == 3  # 18 frames
    batches = take(loader, 6)
    first = np.concatenate([b["i"] for b in batches[:3]])
    second = np.concatenate([b["i"] for b in batches[3:]])
    assert sorted(first) == sorted(second) == list(range(18))
    assert first.tolist() != second.tolist()
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["batch_in_epoch"] == 0
    np.testing.assert_array_equal(first, loader.epoch_order(0))


def test_unshuffled_and_drop_last(dataset):
    loader = create_data_loader(dataset, [lambda s: {"i": s["index"]}], 5, shuffle=False, drop_last=False)
    sizes = [len(b["i"]) for b in take(loader, 4)]
    assert sizes == [5, 5, 5, 3]
    assert create_data_loader(dataset, [lambda s: {"i": s["index"]}], 5).__len__() == 3
    with pytest.raises(InputError, match="gives no batch of 32 with drop_last"):
        create_data_loader(dataset, [], 32)


def test_resume_continues_with_exactly_the_next_batches(dataset):
    original = create_data_loader(dataset, TRANSFORMS, 4, seed=11)
    iterator = iter(original)
    for _ in range(5):  # crosses the epoch boundary (4 batches per epoch)
        next(iterator)
    state = json.loads(json.dumps(original.state_dict()))
    expected = [next(iterator) for _ in range(4)]

    resumed = create_data_loader(dataset, TRANSFORMS, 4, seed=11)
    resumed.load_state_dict(state)
    assert_batches_equal(take(resumed, 4), expected)


def test_an_iterator_is_stale_after_a_new_one_or_a_load(dataset):
    loader = create_data_loader(dataset, TRANSFORMS, 4, seed=1)
    old = iter(loader)
    next(old)
    state = loader.state_dict()
    new = iter(loader)
    with pytest.raises(InputError, match="iterator is stale"):
        next(old)
    second = next(new)
    loader.load_state_dict(state)
    with pytest.raises(InputError, match="iterator is stale"):
        next(new)
    assert_batches_equal([next(iter(loader))], [second])


def test_resume_refuses_a_state_with_another_order(dataset):
    state = create_data_loader(dataset, TRANSFORMS, 4, seed=1).state_dict()
    with pytest.raises(InputError, match="saved with seed=1, this loader has seed=2"):
        create_data_loader(dataset, TRANSFORMS, 4, seed=2).load_state_dict(state)
    with pytest.raises(InputError, match="lacks"):
        create_data_loader(dataset, TRANSFORMS, 4).load_state_dict({"epoch": 0})


def test_workers_give_the_same_stream_and_resume(dataset):
    serial = take(create_data_loader(dataset, TRANSFORMS, 4, seed=5), 6)
    with create_data_loader(dataset, TRANSFORMS, 4, seed=5, num_workers=2) as parallel:
        iterator = iter(parallel)
        head = [next(iterator) for _ in range(3)]
        state = parallel.state_dict()
        assert state["epoch"] == 0 and state["batch_in_epoch"] == 3  # prefetched batches do not count
        tail = [next(iterator) for _ in range(3)]
    assert_batches_equal(head + tail, serial)
    with create_data_loader(dataset, TRANSFORMS, 4, seed=5, num_workers=2) as resumed:
        resumed.load_state_dict(state)
        assert_batches_equal(take(resumed, 3), serial[3:])


def test_worker_errors_reach_the_caller_with_the_item(dataset):
    bad = [RepackTransform({"state": "missing.key"})]
    with pytest.raises(InputError, match=r"'missing\.key', which is missing") as error:
        next(iter(create_data_loader(dataset, bad, 2, shuffle=False)))
    assert "while loading dataset item 0" in error.value.__notes__


def test_collate_names_the_key_of_mismatched_shapes():
    with pytest.raises(InputError, match=r"cannot batch 'image/top': the samples have different shapes \[2\], \[3\]"):
        collate([{"image": {"top": np.zeros(2)}}, {"image": {"top": np.zeros(3)}}])
    with pytest.raises(InputError, match="one lacks 'b'"):
        collate([{"b": 1}, {"a": 1}])


def test_locks_are_recreated_when_sent_to_workers():
    import pickle

    class_with_lock = {"lock": threading.Lock(), "rlock": threading.RLock()}
    restored = pickle.loads(_dumps(class_with_lock))
    assert restored["lock"].acquire(blocking=False) and restored["rlock"].acquire(blocking=False)


def test_episode_start_oversampling_repeats_the_first_frames_of_every_episode(dataset):
    samples = EpisodeStartOversampling(dataset, frames=6, repeats=3)

    visits = collections.Counter(
        (int(item["episode_index"]), int(item["frame_index"])) for item in (samples[i] for i in range(len(samples)))
    )

    # Episodes of 7, 5 and 6 frames; the 5-frame episode has only 5 first frames to repeat.
    assert len(samples) == 18 + 2 * (6 + 5 + 6)
    for (episode, frame), count in visits.items():
        assert count == (3 if frame < 6 else 1), (episode, frame)
    assert sorted(visits) == [(e, f) for e, length in enumerate([7, 5, 6]) for f in range(length)]


def test_episode_start_oversampling_feeds_the_loader_with_every_listed_sample(dataset):
    samples = EpisodeStartOversampling(dataset, frames=1, repeats=4)
    loader = create_data_loader(samples, [], batch_size=len(samples), seed=0)

    batch = next(iter(loader))

    assert (
        collections.Counter(zip(batch["episode_index"].tolist(), batch["frame_index"].tolist(), strict=True))[(1, 0)]
        == 4
    )


def test_episode_start_oversampling_rejects_non_positive_counts(dataset):
    with pytest.raises(InputError, match="positive frames and repeats"):
        EpisodeStartOversampling(dataset, frames=0, repeats=2)
