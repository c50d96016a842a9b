"""The wire protocol between a policy server and a robot: one module, byte-compatible with openpi.

Transport
    One websocket per robot, on the server's port (8000 by default), any path. No
    compression. When the server has an API key, the opening handshake must carry
    ``Authorization: Api-Key <key>`` (:func:`api_key_header`); a missing or wrong key
    is refused with HTTP 401 before any frame is exchanged. While the server warms
    up or shuts down, or when ``--max-connections`` robots are connected already,
    handshakes are refused with HTTP 503; clients retry.

Frames
    1. Right after the handshake the server sends one binary frame: the msgpack
       packed metadata dict of the policy (``{}`` at least).
    2. Then, as often as it likes, the client sends one binary frame holding one
       msgpack observation (a map with string keys), and the server answers it with
       one binary frame: a map with the policy's output (``actions`` and what else
       the policy returns) plus ``server_timing``, a map with ``infer_ms`` (decoding
       to result, milliseconds) and, from the second request of a connection on,
       ``prev_total_ms`` (the previous request from its arrival to its answer being
       sent). One request at a time per connection: answers come in order.
    3. A refused request is answered with one text frame, a one-line error
       ``"<ErrorType>: <message>"`` without a traceback, then a close frame whose
       reason repeats the text (cut to 123 bytes) and whose code says who is at fault:

       - :data:`CLOSE_POLICY_VIOLATION` (1008): the request. Malformed msgpack, not a
         map, a text frame, or an observation the policy refuses (missing key, wrong
         shape, NaN, …). Fix the request and reconnect.
       - :data:`CLOSE_TOO_BIG` (1009): the frame exceeds the server's
         ``max_message_bytes``. websockets closes the connection itself, so no text
         frame comes, only the close frame, with the reason
         ``"frame with N bytes exceeds limit of M bytes"``.
       - :data:`CLOSE_INTERNAL_ERROR` (1011): the server; the model raised (every
         request of that batch gets it), or its answer held NaN or an infinity, which
         is never sent. The server keeps serving.
       - :data:`CLOSE_TRY_AGAIN_LATER` (1013): the server is busy, its request queue
         (``--max-queue``) is full; the request was not computed. Back off, reconnect
         and send a fresh observation.
       - :data:`CLOSE_GOING_AWAY` (1001): the server is shutting down, after
         answering the requests in flight. No text frame.

Real-time chunking (optional)
    A robot that keeps executing its current chunk while the next one is computed
    (:class:`openpi_core.client.RealTimeExecutor`) may add three keys to an
    observation, so that the new chunk continues the actions it will still execute
    (Black, Galliker and Levine, "Real-Time Execution of Action Chunking Flow
    Policies", arXiv 2506.07339):

    - :data:`RTC_PREFIX_ACTIONS` ``"rtc/prefix_actions"``: ``[h, robot action dim]``
      float, in the robot's own action space (what the server answered, not model
      units), ``1 <= h <= H`` (the model's ``action_horizon``): the actions of the
      current chunk that will execute from this observation's control tick on. Row
      ``i`` is the action for tick ``i`` counted from this observation, like row
      ``i`` of the answer.
    - :data:`RTC_INFERENCE_DELAY` ``"rtc/inference_delay"``: an integer
      ``0 <= d <= h``, the control ticks the robot expects to pass before the answer
      is used. The answer's first ``d`` actions are held to the prefix.
    - :data:`RTC_EXECUTION_HORIZON` ``"rtc/execution_horizon"`` (optional): the
      paper's ``s``; guidance ends at row ``H - s``. Default ``H - h``, the end of the
      prefix; it must satisfy ``H - h <= s <= H - d``.

    The first two come together or not at all. Without them a request is served as
    before (openpi's clients never send them). The server maps the prefix into model
    space (the embodiment's input transforms, which turn training actions into model
    units, then delta actions and normalization: the inverse of the output path), pads
    it to the model's width and horizon, and passes it with the delay to the model's
    ``sample_actions``. The answer has the usual shape. Requests with and without
    these keys are computed in separate model calls. A policy whose model cannot
    guide its sampling (π0-FAST) refuses them with 1008; the server's metadata says
    ``"real_time_chunking": true`` when it can.

HTTP on the same port
    ``GET /healthz`` answers 200 while the process serves; ``GET /readyz`` answers 200
    once the policy is warmed up and the server accepts robots, else 503;
    ``GET /metrics`` answers Prometheus text. None of them needs the API key.

Encoding (openpi's ``msgpack_numpy``)
    Plain msgpack (``use_bin_type``: ``bytes`` travel as bin, ``str`` as str; tuples
    arrive as lists). A numpy array travels as the map
    ``{b"__ndarray__": True, b"data": <C-order bytes>, b"dtype": <dtype.str>, b"shape": [..]}``
    and a numpy scalar as ``{b"__npgeneric__": True, b"data": <item>, b"dtype": <dtype.str>}``,
    keys being bin, in exactly that order. ``np.float64``, ``np.str_`` and ``np.bytes_``
    subclass Python types, so msgpack sends them as plain values. Supported kinds:
    bool, signed and unsigned integers, floats, bytes (``S``) and unicode (``U``)
    strings; arrays also datetime64 and timedelta64. Object, void (structured, bfloat16) and complex
    dtypes are refused on both sides, so decoding never runs code (no pickle).
    Decoded arrays are writable copies (openpi's are read-only views of the received
    bytes, which torch's ``from_numpy`` warns about; a copy costs ~0.05 ms per 450 kB).
    Decoding refuses extension types (the standard msgpack timestamp decodes to
    :class:`msgpack.Timestamp`), array maps whose byte count does not match their
    dtype and shape, maps and lists nested deeper than :data:`MAX_DEPTH`, and anything
    else malformed.

Error texts
    Every error text is one line of at most :data:`MAX_ERROR_BYTES` bytes; it names at
    most a few offending items and says how many there were, so a frame of junk never
    comes back as a frame of junk.
"""

import hmac
import math
from typing import Any

import msgpack
import numpy as np

from openpi_core.errors import InputError, few, short_repr

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013

RTC_PREFIX_ACTIONS = "rtc/prefix_actions"
"""Observation key: the leftover actions ``[h, robot action dim]`` of the robot's current chunk (module docstring)."""
RTC_INFERENCE_DELAY = "rtc/inference_delay"
"""Observation key: control ticks until the answer is used (an integer, module docstring)."""
RTC_EXECUTION_HORIZON = "rtc/execution_horizon"
"""Observation key, optional: the execution horizon ``s``; guidance ends at row ``H - s``."""
RTC_KEYS = (RTC_PREFIX_ACTIONS, RTC_INFERENCE_DELAY, RTC_EXECUTION_HORIZON)

API_KEY_HEADER = "Authorization"
API_KEY_SCHEME = "Api-Key"
API_KEY_ENV = "OPENPI_API_KEY"
"""Environment variable the server and the client read their API key from when none is given."""

_ARRAY_KINDS = frozenset("biufSUMm")
_SCALAR_KINDS = frozenset("biufSU")
_ARRAY_KEYS = frozenset((b"__ndarray__", b"data", b"dtype", b"shape"))
_SCALAR_KEYS = frozenset((b"__npgeneric__", b"data", b"dtype"))
# A close frame's reason must fit in 123 bytes of UTF-8 (RFC 6455, 5.5).
_MAX_REASON_BYTES = 123

# The server's default limits (``openpi_core.serving.ServerConfig``), here so that the
# command line can show them without importing the server.
# Four 224x224x3 uint8 cameras are 4 * 150,528 = 602,112 bytes; the state, the prompt
# and msgpack's framing add well under 4 KiB. 4 MiB is ~7x that: it still takes the
# same four cameras from a client that sends them as float32 (2,408,448 bytes). With
# the limits below it bounds the memory robots can make the server hold (module docstring).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 2**20
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_QUEUE = 32
# websockets buffers 16 received frames per connection by default; one request is
# answered at a time, so one frame waiting behind it is enough.
DEFAULT_RECV_QUEUE = 1

MAX_DEPTH = 8
"""The deepest nesting of maps and lists a message may have (observations use 2 or 3)."""
MAX_ERROR_BYTES = 1024
"""The longest error text (UTF-8) the server sends or logs for a refused request."""


class WireError(InputError):
    """A message that the wire protocol cannot carry: malformed msgpack, an unsupported dtype, …"""


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (dicts, lists, str, bytes, numbers, numpy arrays and scalars).

    Raises:
        WireError: an unsupported numpy dtype, or a value msgpack cannot carry.
    """
    try:
        return msgpack.packb(obj, default=_encode_numpy)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as error:
        raise WireError(f"cannot pack message: {error}") from error


def unpack(data: bytes) -> Any:
    """The object packed in ``data``, with numpy arrays and scalars restored.

    Raises:
        WireError: ``data`` is not one well-formed msgpack object of the kinds above.
    """
    try:
        message = msgpack.unpackb(data, object_hook=_decode_numpy, ext_hook=_refuse_extension)
    except WireError:
        raise
    except Exception as error:  # msgpack raises many unrelated types on garbage input
        raise WireError(f"malformed msgpack message: {type(error).__name__}: {error}") from error
    _check_depth(message)
    return message


def unpack_observation(data: bytes) -> dict:
    """The observation map packed in ``data``: :func:`unpack`, which must give a map.

    Raises:
        WireError: ``data`` is malformed (see :func:`unpack`) or holds something else than a map.
    """
    observation = unpack(data)
    if not isinstance(observation, dict):
        raise WireError(f"observation should be a msgpack map, got {type(observation).__name__}")
    return observation


def error_text(error: BaseException) -> str:
    """The one-line ``"<ErrorType>: <message>"`` text the server sends for a refused request.

    At most :data:`MAX_ERROR_BYTES` bytes of UTF-8; a longer message is cut and ends in ``...``.
    """
    message = " ".join(str(error).split())
    return _cut(f"{type(error).__name__}: {message}" if message else type(error).__name__, MAX_ERROR_BYTES)


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame's reason (at most 123 bytes of UTF-8)."""
    return _cut(text, _MAX_REASON_BYTES)


def _cut(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[: max_bytes - 3].decode(errors="ignore") + "..."


def api_key_header(api_key: str) -> dict[str, str]:
    """The handshake header that carries ``api_key``, as openpi's client sends it."""
    return {API_KEY_HEADER: f"{API_KEY_SCHEME} {api_key}"}


def api_key_matches(header_value: str | None, api_key: str) -> bool:
    """Whether an ``Authorization`` header value carries ``api_key`` (constant-time comparison)."""
    scheme, _, given = (header_value or "").partition(" ")
    return scheme == API_KEY_SCHEME and hmac.compare_digest(given.strip().encode(), api_key.encode())


def _encode_numpy(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ARRAY_KINDS:
            raise WireError(
                f"cannot send arrays of dtype {obj.dtype}; supported kinds are {''.join(sorted(_ARRAY_KINDS))}"
            )
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in _SCALAR_KINDS:
            raise WireError(
                f"cannot send numpy scalars of dtype {obj.dtype}; supported kinds are {''.join(sorted(_SCALAR_KINDS))}"
            )
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"cannot send objects of type {type(obj).__name__}")


def _decode_numpy(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return _decode_array(obj)
    if b"__npgeneric__" in obj:
        return _decode_scalar(obj)
    return obj


def _decode_array(obj: dict) -> np.ndarray:
    if obj.keys() != _ARRAY_KEYS:
        raise WireError(f"array map should have keys {sorted(_ARRAY_KEYS)}, got {few(obj)}")
    dtype = _decode_dtype(obj[b"dtype"], _ARRAY_KINDS)
    data, shape = obj[b"data"], obj[b"shape"]
    if not isinstance(data, bytes):
        raise WireError(f"array data should be bin, got {type(data).__name__}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise WireError(f"array shape should be a list of non-negative integers, got {short_repr(shape)}")
    expected = dtype.itemsize * math.prod(shape)
    if len(data) != expected:
        raise WireError(f"array of dtype {dtype} and shape {shape} should have {expected} bytes, got {len(data)}")
    return np.ndarray(buffer=data, dtype=dtype, shape=shape).copy()


def _decode_scalar(obj: dict) -> np.generic:
    if obj.keys() != _SCALAR_KEYS:
        raise WireError(f"scalar map should have keys {sorted(_SCALAR_KEYS)}, got {few(obj)}")
    dtype = _decode_dtype(obj[b"dtype"], _SCALAR_KINDS)
    data = obj[b"data"]
    if not isinstance(data, bool | int | float | str | bytes):
        raise WireError(f"scalar data should be a number or a string, got {type(data).__name__}")
    return dtype.type(data)


def _decode_dtype(name: Any, kinds: frozenset[str]) -> np.dtype:
    if not isinstance(name, str):
        raise WireError(f"dtype should be a string, got {type(name).__name__}")
    try:
        dtype = np.dtype(name)
    except Exception as error:  # numpy raises TypeError, ValueError, SyntaxError, ... on odd names
        raise WireError(f"unknown dtype {short_repr(name)}") from error
    if dtype.kind not in kinds or dtype.hasobject:
        raise WireError(f"refusing dtype {short_repr(name)}: supported kinds are {''.join(sorted(kinds))}")
    return dtype


def _check_depth(message: Any) -> None:
    """Refuse maps and lists nested deeper than :data:`MAX_DEPTH` (iteratively: no recursion)."""
    stack = [(message, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_DEPTH:
            raise WireError(f"message is nested deeper than {MAX_DEPTH} maps or lists")
        stack.extend((child, depth + 1) for child in children)


def _refuse_extension(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not part of the protocol")
