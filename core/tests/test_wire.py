"""The wire format: openpi's msgpack numpy encoding, byte for byte, and what decoding refuses."""

import msgpack
import numpy as np
import pytest

from openpi_core import wire
from openpi_core.errors import InputError

ARRAYS = [
    np.array([True, False, True]),
    *(np.arange(-3, 3, dtype=dtype) for dtype in (np.int8, np.int16, np.int32, np.int64)),
    *(np.arange(6, dtype=dtype).reshape(2, 3) for dtype in (np.uint8, np.uint16, np.uint32, np.uint64)),
    *(np.linspace(-1, 1, 12, dtype=dtype).reshape(2, 2, 3) for dtype in (np.float16, np.float32, np.float64)),
    np.arange(4, dtype=">f4"),
    np.array([b"ab", b"cde"]),
    np.array(["π0", "aloha"]),
    np.array(["2024-01-02T03:04:05"], dtype="datetime64[ns]"),
    np.array([5, -7], dtype="timedelta64[s]"),
    np.array(7.5, np.float32),
    np.zeros((0, 3), np.float32),
    np.arange(12, dtype=np.int32).reshape(3, 4).T,
    np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
]

SCALARS = [np.bool_(True), np.int8(-5), np.uint64(2**63), np.int64(-(2**40)), np.float16(0.5), np.float32(1.25)]
# Subclasses of Python's float, str and bytes: msgpack packs them natively, as in openpi.
NATIVE_SCALARS = [(np.float64(-3.5), float), (np.str_("go"), str), (np.bytes_(b"\x00\x01"), bytes)]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_every_supported_array_dtype_round_trips(array):
    decoded = wire.unpack(wire.pack({"x": array}))["x"]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable and decoded.flags.c_contiguous


@pytest.mark.parametrize("scalar", SCALARS, ids=lambda s: s.dtype.str)
def test_every_supported_numpy_scalar_round_trips(scalar):
    decoded = wire.unpack(wire.pack([scalar]))[0]
    assert type(decoded) is type(scalar) and decoded == scalar


@pytest.mark.parametrize(("scalar", "python_type"), NATIVE_SCALARS, ids=lambda s: str(s))
def test_numpy_scalars_that_subclass_python_types_arrive_as_python_values(scalar, python_type):
    decoded = wire.unpack(wire.pack([scalar]))[0]
    assert type(decoded) is python_type and decoded == scalar


def test_nested_dicts_lists_and_plain_values_round_trip():
    message = {
        "images": {"cam_high": np.ones((3, 4, 4), np.uint8), "cam_low": np.zeros((3, 4, 4), np.uint8)},
        "state": np.arange(14, dtype=np.float32),
        "prompt": "fold the towel",
        "meta": {"episode": 3, "ok": True, "none": None, "raw": b"\x01\x02", "nested": [1.5, "a", [np.int32(2)]]},
    }
    decoded = wire.unpack(wire.pack(message))
    assert decoded.keys() == message.keys()
    np.testing.assert_array_equal(decoded["images"]["cam_high"], message["images"]["cam_high"])
    np.testing.assert_array_equal(decoded["state"], message["state"])
    assert decoded["prompt"] == "fold the towel"
    assert decoded["meta"] == {"episode": 3, "ok": True, "none": None, "raw": b"\x01\x02", "nested": [1.5, "a", [2]]}
    assert type(decoded["meta"]["nested"][2][0]) is np.int32


def _bin(data: bytes) -> bytes:
    return b"\xc4" + bytes([len(data)]) + data


def _str(text: str) -> bytes:
    return bytes([0xA0 | len(text)]) + text.encode()


def test_bytes_equal_a_hand_built_msgpack_map():
    """The exact bytes openpi's msgpack_numpy writes: compatibility with its clients and servers."""
    message = {"state": np.array([1, 2], dtype=np.uint8), "gain": np.float32(1.5), "prompt": "hi"}
    expected = (
        b"\x83"  # map of 3
        + _str("state")
        + b"\x84"  # map of 4, keys as bin in openpi's order
        + _bin(b"__ndarray__")
        + b"\xc3"  # true
        + _bin(b"data")
        + _bin(b"\x01\x02")
        + _bin(b"dtype")
        + _str("|u1")
        + _bin(b"shape")
        + b"\x91\x02"  # [2]
        + _str("gain")
        + b"\x83"
        + _bin(b"__npgeneric__")
        + b"\xc3"
        + _bin(b"data")
        + b"\xcb"
        + np.array(1.5, ">f8").tobytes()  # the item, as a float64
        + _bin(b"dtype")
        + _str("<f4")
        + _str("prompt")
        + _str("hi")
    )
    assert wire.pack(message) == expected
    decoded = wire.unpack(expected)
    np.testing.assert_array_equal(decoded["state"], [1, 2])
    assert decoded["gain"] == np.float32(1.5) and decoded["prompt"] == "hi"


@pytest.mark.parametrize(
    "value",
    [np.array([object()]), np.array([1 + 2j]), np.zeros(2, dtype="f4,i4"), np.complex64(1j), object(), {1, 2}],
    ids=["object", "complex", "structured", "complex-scalar", "python-object", "set"],
)
def test_pack_refuses_what_the_protocol_cannot_carry(value):
    with pytest.raises(wire.WireError):
        wire.pack({"x": value})


def _array_map(**overrides) -> bytes:
    fields = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    fields.update({key.encode(): value for key, value in overrides.items()})
    return msgpack.packb({"x": fields})


@pytest.mark.parametrize(
    "data",
    [
        _array_map(dtype="|O"),
        _array_map(dtype="|V8"),
        _array_map(dtype="<c8"),
        _array_map(dtype="not-a-dtype"),
        _array_map(dtype=7),
        _array_map(data=b"\x00" * 7),
        _array_map(data="text"),
        _array_map(shape=[-2]),
        _array_map(shape=[2**62, 2**62]),
        _array_map(shape="2"),
        _array_map(extra=1),
        msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}),
        msgpack.packb({b"__npgeneric__": True, b"data": [1], b"dtype": "<f4"}),
        msgpack.packb(msgpack.ExtType(42, b"payload")),
        msgpack.packb({1: "int key"}),
        b"\xc1",  # never used in msgpack
        msgpack.packb({"x": 1})[:-1],  # truncated
        msgpack.packb({"x": 1}) + b"\x00",  # trailing data
        b"\x80\x03\x58\x04\x00\x00\x00boom\x94.",  # a pickle
    ],
    ids=lambda data: repr(data[:24]),
)
def test_unpack_refuses_anything_but_plain_msgpack_and_numeric_arrays(data):
    with pytest.raises(wire.WireError) as caught:
        wire.unpack(data)
    assert isinstance(caught.value, InputError) and "\n" not in str(caught.value)


def test_error_text_is_one_line_and_close_reason_fits_a_close_frame():
    assert (
        wire.error_text(InputError("state:\n  expected [14]\n  got [7]")) == "InputError: state: expected [14] got [7]"
    )
    assert wire.error_text(RuntimeError()) == "RuntimeError"
    assert wire.close_reason("short") == "short"
    reason = wire.close_reason("π" * 200)
    assert len(reason.encode()) <= 123 and reason.endswith("...")


def test_api_key_header_and_check():
    header = wire.api_key_header("s3cret")
    assert header == {"Authorization": "Api-Key s3cret"}
    assert wire.api_key_matches(header["Authorization"], "s3cret")
    for wrong in (None, "", "Api-Key other", "Bearer s3cret", "s3cret"):
        assert not wire.api_key_matches(wrong, "s3cret")


def _nested(depth: int) -> dict:
    message: dict = {"leaf": 1}
    for _ in range(depth - 1):
        message = {"a": message}
    return message


def test_messages_nested_deeper_than_the_limit_are_refused_without_recursion():
    assert wire.unpack(wire.pack(_nested(wire.MAX_DEPTH)))  # the deepest allowed
    for message in (_nested(wire.MAX_DEPTH + 1), _nested(1000), [[[[[[[[[[1]]]]]]]]]]):
        with pytest.raises(wire.WireError, match=f"nested deeper than {wire.MAX_DEPTH}"):
            wire.unpack(msgpack.packb(message))


def test_untrusted_values_are_echoed_short():
    huge = {b"__ndarray__": True, b"data": b"", b"dtype": "<" + "f" * 100_000, b"shape": [0]}
    with pytest.raises(wire.WireError) as refused:
        wire.unpack(msgpack.packb({"x": huge}))
    assert len(str(refused.value)) < 200 and "100001 long" in str(refused.value)
    junk_keys = {f"k{i}": b"" for i in range(10_000)} | {b"__ndarray__": True}
    with pytest.raises(wire.WireError) as refused:
        wire.unpack(msgpack.packb({"x": junk_keys}))
    assert len(str(refused.value)) < 400 and "more" in str(refused.value)


def test_error_text_is_one_line_of_at_most_1_kib():
    text = wire.error_text(InputError("line one\nline two " + "x" * 5000))
    assert text.startswith("InputError: line one line two xxx") and "\n" not in text
    assert len(text.encode()) <= wire.MAX_ERROR_BYTES and text.endswith("...")
    assert wire.error_text(InputError("π" * 2000)).encode().decode()  # cut on a character boundary
