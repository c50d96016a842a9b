"""Fuzzing what a robot can send: for any frame, the server's decode and validation give
a valid observation or an ``InputError``, never another exception.

The target is the path a frame takes in the server before the model:
``wire.unpack_observation`` then ``Policy.prepare`` of the bundled ALOHA-sim policy (its
embodiment's schema and transforms, normalization, resizing, cropping, tokenizing).
Three sources of frames: random bytes, observations built from the schema with
arbitrary shapes, dtypes, values, keys and nesting, and byte-level damage to a valid
frame. CI runs a bounded number of examples; ``python benchmarks/fuzz_wire.py`` runs
the same test much longer and reports how many frames it tried.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from openpi_core import wire
from openpi_core.errors import InputError
from openpi_core.observation import Observation

EXAMPLES = int(os.environ.get("OPENPI_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 1000
)


@pytest.fixture(scope="module")
def prepare():
    from openpi_backend_torch import plugin as torch_plugin
    from openpi_core.plugins import PluginManager, use_plugin_manager
    from openpi_core.policy import create_policy
    from openpi_embodiment_aloha import plugin as aloha_plugin

    manager = PluginManager(entry_points=False, plugins=[("torch", torch_plugin), ("aloha", aloha_plugin)])
    with use_plugin_manager(manager):
        yield create_policy("pi0_aloha_sim_small", backend="torch").prepare


def check(prepare, frame: bytes) -> None:
    """The property: a valid observation or an InputError; anything else fails the test."""
    try:
        observation = prepare(wire.unpack_observation(frame))
    except InputError as error:
        assert "\n" not in wire.error_text(error) and len(wire.error_text(error).encode()) <= wire.MAX_ERROR_BYTES
        return
    assert isinstance(observation, Observation)
    assert np.isfinite(observation.state).all()


DTYPES = st.sampled_from(["|u1", "<f4", "<f8", "<f2", "<i4", "<i8", "|b1", "<u2", ">f4", "<U3", "|S2", "<M8[s]"])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
FLOATS = st.sampled_from([0.0, 1.0, -1.0, 0.5, 3e38, -3e38, 1e300, np.nan, np.inf, 1e-45, 255.0, 256.0])


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    if draw(st.booleans()):  # the shapes the robot should send, with odd dtypes and values
        shape = draw(st.sampled_from([(3, 224, 224), (3, 480, 640), (224, 224, 3), (14,), (3, 1, 1), (3, 2, 900)]))
    else:
        shape = draw(SHAPES)
    array = np.zeros(shape, dtype)
    if dtype.kind in "fiub" and array.size:
        flat = array.reshape(-1)
        for index in draw(st.lists(st.integers(0, flat.size - 1), max_size=4)):
            value = draw(FLOATS)
            with np.errstate(all="ignore"):
                flat[index] = (
                    value if dtype.kind == "f" else np.asarray(value).astype(dtype) if np.isfinite(value) else 0
                )
    return array


LEAVES = st.one_of(
    arrays(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
)
KEYS = st.one_of(
    st.sampled_from(["images", "cam_high", "cam_low", "cam_left_wrist", "state", "prompt"]), st.text(max_size=8)
)
TREES = st.recursive(
    LEAVES, lambda inner: st.dictionaries(KEYS, inner, max_size=5) | st.lists(inner, max_size=3), max_leaves=12
)


@st.composite
def observations(draw) -> dict:
    observation = {
        "images": {"cam_high": draw(arrays())},
        "state": draw(arrays()),
    }
    if draw(st.booleans()):
        observation["prompt"] = draw(st.one_of(st.text(max_size=200), TREES))
    for _ in range(draw(st.integers(0, 2))):
        observation[draw(KEYS)] = draw(TREES)
    if draw(st.booleans()):
        del observation[draw(st.sampled_from(["images", "state"]))]
    return observation


def valid_frame() -> bytes:
    return wire.pack(
        {"images": {"cam_high": np.zeros((3, 224, 224), np.uint8)}, "state": np.zeros(14, np.float32), "prompt": "go"}
    )


@FUZZ
@given(frame=st.binary(max_size=2000))
def test_random_bytes(prepare, frame):
    check(prepare, frame)


@FUZZ
@given(observation=observations())
def test_observations_of_any_shape_dtype_value_and_key(prepare, observation):
    try:
        frame = wire.pack(observation)
    except wire.WireError:
        return  # not even sendable; the client refuses it before the server could
    check(prepare, frame)


@FUZZ
@given(data=st.data())
def test_damaged_valid_frames(prepare, data):
    frame = bytearray(valid_frame())
    for _ in range(data.draw(st.integers(1, 6))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        index = data.draw(st.integers(0, len(frame) - 1))
        if action == "flip":
            frame[index] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del frame[index : index + data.draw(st.integers(1, 64))]
        else:
            frame[index:index] = data.draw(st.binary(min_size=1, max_size=16))
        if not frame:
            break
    check(prepare, bytes(frame))


@FUZZ
@given(tree=TREES)
def test_raw_msgpack_maps_posing_as_arrays(prepare, tree):
    fake = {b"__ndarray__": True, b"data": b"\x00" * 4, b"dtype": "<f4", b"shape": [1]}
    fields = {key: tree for key in fake if key != b"__ndarray__"}
    for key, value in fields.items():
        frame = wire.pack({"state": {**fake, key: value}, "images": {"cam_high": fake}})
        check(prepare, frame)
