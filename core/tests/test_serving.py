"""The policy server against a deterministic fake policy: batching, refusals, access, HTTP, shutdown.

Every server binds an ephemeral port on 127.0.0.1; every wait has a timeout.
"""

import contextlib
import http.client
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from openpi_core import wire
from openpi_core.errors import InputError
from openpi_core.serving import DEFAULT_MAX_MESSAGE_BYTES, BackgroundServer, ServerConfig

HORIZON = 4
TIMEOUT_S = 10.0


def expected_actions(state: np.ndarray) -> np.ndarray:
    """What the fake policy answers: ``[HORIZON, D]`` with row h = (h + 1) * state + 0.5."""
    return (np.arange(1, HORIZON + 1, dtype=np.float32)[:, None] * state[None, :] + 0.5).astype(np.float32)


class FakePolicy:
    """actions = f(state), one stacked computation per batch, sleeping ``compute_s`` per ``run`` call.

    ``prepare`` refuses a missing or non-finite state; ``run`` raises when any item
    asked to ``explode``; ``warmup`` blocks until ``warmup_gate`` is set.
    """

    metadata = {"name": "fake", "action_horizon": HORIZON}

    def __init__(self, compute_s: float = 0.0, warmup_gate: threading.Event | None = None) -> None:
        self.compute_s = compute_s
        self.warmup_gate = warmup_gate
        self.batch_sizes: list[int] = []
        self.running = threading.Event()

    def warmup(self) -> None:
        if self.warmup_gate is not None:
            assert self.warmup_gate.wait(TIMEOUT_S)

    def prepare(self, observation: dict) -> dict:
        if "state" not in observation:
            raise InputError("state: missing; expected a float array [D]")
        state = np.asarray(observation["state"], dtype=np.float32)
        if not np.isfinite(state).all():
            raise InputError(f"state: expected finite values, got {state.tolist()}")
        return {"state": state, "explode": bool(observation.get("explode", False))}

    def batch_key(self, prepared: dict) -> tuple:
        return prepared["state"].shape

    def run(self, prepared: list[dict]) -> list[dict]:
        self.batch_sizes.append(len(prepared))
        self.running.set()
        time.sleep(self.compute_s)
        if any(item["explode"] for item in prepared):
            raise RuntimeError("the model exploded")
        states = np.stack([item["state"] for item in prepared])
        actions = np.arange(1, HORIZON + 1, dtype=np.float32)[None, :, None] * states[:, None, :] + 0.5
        return [
            {"actions": a, "state": s, "policy_timing": {"infer_ms": 1.0}} for a, s in zip(actions, states, strict=True)
        ]


def serve(policy: FakePolicy, **config) -> BackgroundServer:
    return BackgroundServer(policy, ServerConfig(port=0, api_key=config.pop("api_key", None), **config))


def http_get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


@contextlib.contextmanager
def open_robot(port: int, **kwargs):
    """A raw websocket connection that has read the metadata frame."""
    with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, open_timeout=TIMEOUT_S, **kwargs) as robot:
        assert wire.unpack(robot.recv(timeout=TIMEOUT_S)) == FakePolicy.metadata
        yield robot


def ask(connection, state: np.ndarray) -> dict:
    connection.send(wire.pack({"state": state, "prompt": "do it"}))
    return wire.unpack(connection.recv(timeout=TIMEOUT_S))


def refusal(connection, frame: bytes | str) -> tuple[str, int]:
    """Send ``frame``; return the error text and the close code that follow."""
    connection.send(frame)
    text = connection.recv(timeout=TIMEOUT_S)
    with pytest.raises(ConnectionClosed) as closed:
        connection.recv(timeout=TIMEOUT_S)
    return text, closed.value.rcvd.code


def test_answers_carry_the_policy_output_and_server_timing():
    with serve(FakePolicy()) as background, open_robot(background.server.port) as robot:
        state = np.array([1.0, -2.0, 3.0], np.float32)
        first, second = ask(robot, state), ask(robot, state)
    np.testing.assert_array_equal(first["actions"], expected_actions(state))
    np.testing.assert_array_equal(first["state"], state)
    assert first["policy_timing"] == {"infer_ms": 1.0}
    assert set(first["server_timing"]) == {"infer_ms"}
    assert set(second["server_timing"]) == {"infer_ms", "prev_total_ms"}


def test_sixteen_concurrent_clients_are_batched_and_get_their_own_answers():
    policy = FakePolicy(compute_s=0.02)
    clients, rounds = 16, 3
    # Two state sizes: two batch keys, which must never share a run call (np.stack would fail).
    states = [np.arange(3 + (i % 2) * 2, dtype=np.float32) * (i + 1) for i in range(clients)]
    with serve(policy, max_batch=16, batch_window_ms=5.0) as background:
        port = background.server.port
        with open_robot(port) as robot:
            alone = [ask(robot, state)["actions"] for state in states]
        policy.batch_sizes.clear()
        answers: list[list] = [[] for _ in range(clients)]
        barrier = threading.Barrier(clients, timeout=TIMEOUT_S)

        def robot_loop(i: int) -> None:
            with open_robot(port) as robot:
                barrier.wait()
                answers[i] = [ask(robot, states[i])["actions"] for _ in range(rounds)]

        threads = [threading.Thread(target=robot_loop, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S)
        status, content_type, metrics = http_get(port, "/metrics")

    for i in range(clients):
        assert len(answers[i]) == rounds
        for answer in answers[i]:
            np.testing.assert_array_equal(answer, alone[i])
    assert sum(policy.batch_sizes) == clients * rounds
    assert max(policy.batch_sizes) > 1 and max(policy.batch_sizes) <= 16
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    single = _metric(metrics, 'openpi_batch_size_bucket{le="1"}')
    assert _metric(metrics, "openpi_batch_size_count") > single


def test_max_batch_one_runs_every_request_alone():
    policy = FakePolicy(compute_s=0.01)
    with serve(policy, max_batch=1) as background:
        port = background.server.port
        threads = [threading.Thread(target=lambda: _ask_twice(port)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT_S)
    assert policy.batch_sizes == [1] * 8


def _ask_twice(port: int) -> None:
    with open_robot(port) as robot:
        for _ in range(2):
            ask(robot, np.ones(3, np.float32))


@pytest.mark.parametrize(
    ("frame", "expected_text"),
    [
        (b"\xc1garbage", "WireError: malformed msgpack message"),
        (wire.pack([1, 2, 3]), "WireError: observation should be a msgpack map, got list"),
        ("a text frame", "WireError: expected a binary frame"),
        (wire.pack({"prompt": "no state"}), "InputError: state: missing"),
        (wire.pack({"state": np.array([1.0, np.nan], np.float32)}), "InputError: state: expected finite values"),
        (
            msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "|O", b"shape": [1]}}),
            "WireError: refusing dtype '|O'",
        ),
    ],
    ids=["garbage", "not-a-map", "text-frame", "missing-key", "nan", "object-dtype"],
)
def test_a_bad_request_gets_one_line_of_error_and_1008_while_others_keep_being_served(frame, expected_text):
    with serve(FakePolicy(compute_s=0.005)) as background:
        port = background.server.port
        stop = threading.Event()
        good_answers: list[np.ndarray] = []

        def good_robot() -> None:
            with open_robot(port) as robot:
                for _ in range(500):
                    good_answers.append(ask(robot, np.ones(2, np.float32))["actions"])
                    if stop.is_set():
                        return

        thread = threading.Thread(target=good_robot)
        thread.start()
        with open_robot(port) as bad:
            text, code = refusal(bad, frame)
        stop.set()
        thread.join(TIMEOUT_S)
        _, _, metrics = http_get(port, "/metrics")
    assert text.startswith(expected_text) and "\n" not in text and "Traceback" not in text
    assert code == wire.CLOSE_POLICY_VIOLATION
    assert good_answers and all(np.array_equal(a, expected_actions(np.ones(2, np.float32))) for a in good_answers)
    kind = "input" if expected_text.startswith("InputError") else "bad_message"
    assert _metric(metrics, f'openpi_errors_total{{kind="{kind}"}}') == 1


def test_an_oversized_frame_is_closed_with_1009_by_websockets():
    with serve(FakePolicy(), max_message_bytes=64 * 1024) as background:
        port = background.server.port
        with open_robot(port) as robot:
            robot.send(wire.pack({"state": np.zeros(32 * 1024, np.float32)}))
            with pytest.raises(ConnectionClosed) as closed:
                robot.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd.code == wire.CLOSE_TOO_BIG
        assert "exceeds limit of 65536 bytes" in closed.value.rcvd.reason
        with open_robot(port) as robot:
            np.testing.assert_array_equal(ask(robot, np.ones(2, np.float32))["actions"], expected_actions(np.ones(2)))
        _, _, metrics = http_get(port, "/metrics")
    assert _metric(metrics, 'openpi_errors_total{kind="too_big"}') == 1


def test_the_default_message_limit_fits_four_float32_cameras():
    cameras = {f"cam_{i}": np.zeros((224, 224, 3), np.float32) for i in range(4)}
    observation = {"images": cameras, "state": np.zeros(32, np.float32), "prompt": "x" * 1000}
    assert len(wire.pack(observation)) < DEFAULT_MAX_MESSAGE_BYTES


def test_a_failing_model_call_answers_its_whole_batch_with_1011_and_the_server_keeps_serving():
    policy = FakePolicy()
    # A long window: each batch runs as soon as both requests are in.
    with serve(policy, max_batch=2, batch_window_ms=5000.0) as background:
        port = background.server.port
        failed = ask_together(port, [{"state": np.ones(2), "explode": True}, {"state": np.ones(2)}])
        served = ask_together(port, [{"state": np.ones(2)}, {"state": np.full(2, 3.0)}])
    assert policy.batch_sizes == [2, 2]
    assert failed == [("PolicyRunError: RuntimeError: the model exploded", wire.CLOSE_INTERNAL_ERROR)] * 2
    np.testing.assert_array_equal(served[0]["actions"], expected_actions(np.ones(2)))
    np.testing.assert_array_equal(served[1]["actions"], expected_actions(np.full(2, 3.0)))


def ask_together(port: int, observations: list[dict]) -> list:
    """Each observation from its own robot at once: the answer dict, or the error text and close code."""
    outcomes: list = [None] * len(observations)
    barrier = threading.Barrier(len(observations), timeout=TIMEOUT_S)

    def robot(i: int) -> None:
        with open_robot(port) as connection:
            barrier.wait()
            connection.send(wire.pack(observations[i]))
            answer = connection.recv(timeout=TIMEOUT_S)
            if isinstance(answer, bytes):
                outcomes[i] = wire.unpack(answer)
                return
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv(timeout=TIMEOUT_S)
            outcomes[i] = (answer, closed.value.rcvd.code)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(len(observations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    return outcomes


def test_api_key_is_checked_during_the_handshake():
    with serve(FakePolicy(), api_key="s3cret") as background:
        port = background.server.port
        for headers in (None, wire.api_key_header("wrong"), {"Authorization": "Bearer s3cret"}):
            with pytest.raises(InvalidStatus) as refused, open_robot(port, additional_headers=headers):
                pass
            assert refused.value.response.status_code == 401
        with open_robot(port, additional_headers=wire.api_key_header("s3cret")) as robot:
            np.testing.assert_array_equal(ask(robot, np.ones(2, np.float32))["actions"], expected_actions(np.ones(2)))
        assert http_get(port, "/healthz")[0] == 200
        _, _, metrics = http_get(port, "/metrics")
    assert _metric(metrics, 'openpi_errors_total{kind="unauthorized"}') == 3


def test_api_key_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv(wire.API_KEY_ENV, "from-env")
    assert ServerConfig().api_key == "from-env"
    monkeypatch.delenv(wire.API_KEY_ENV)
    assert ServerConfig().api_key is None


def test_health_and_readiness_follow_warm_up():
    gate = threading.Event()
    with BackgroundServer(FakePolicy(warmup_gate=gate), ServerConfig(port=0), wait_ready=False) as background:
        port = background.server.port
        assert http_get(port, "/healthz")[::2] == (200, "OK\n")
        assert http_get(port, "/readyz")[::2] == (503, "policy is warming up\n")
        with pytest.raises(InvalidStatus) as refused, open_robot(port):
            pass
        assert refused.value.response.status_code == 503
        gate.set()
        background.call(background.server.wait_ready(), timeout=TIMEOUT_S)
        assert http_get(port, "/readyz")[::2] == (200, "ready\n")
        with open_robot(port) as robot:
            ask(robot, np.ones(2, np.float32))
        status, content_type, metrics = http_get(port, "/metrics")
    assert status == 200 and content_type == "text/plain; version=0.0.4; charset=utf-8"
    for line in (
        "# TYPE openpi_requests_total counter",
        "openpi_requests_total 1",
        "# TYPE openpi_batch_size histogram",
        'openpi_batch_size_bucket{le="+Inf"} 1',
        "# TYPE openpi_request_latency_seconds histogram",
        "openpi_request_latency_seconds_count 1",
        "openpi_requests_in_flight 0",
        'openpi_errors_total{kind="internal"} 0',
    ):
        assert line in metrics.splitlines()


class FailingWarmUp(FakePolicy):
    def warmup(self) -> None:
        raise RuntimeError("no accelerator found")


def test_a_failed_warm_up_is_raised_and_keeps_robots_out():
    config = ServerConfig(port=0, api_key=None)
    with BackgroundServer(FailingWarmUp(), config, wait_ready=False) as background:
        with pytest.raises(RuntimeError, match="no accelerator found"):
            background.call(background.server.wait_ready(), timeout=TIMEOUT_S)
        port = background.server.port
        assert http_get(port, "/readyz")[::2] == (503, "warm-up failed: RuntimeError: no accelerator found\n")
        assert http_get(port, "/healthz")[0] == 200


def test_stop_answers_the_request_in_flight_then_closes():
    policy = FakePolicy(compute_s=0.5)
    with serve(policy) as background:
        port = background.server.port
        answers: list[dict] = []
        with open_robot(port) as robot:
            thread = threading.Thread(target=lambda: answers.append(ask(robot, np.ones(2, np.float32))))
            thread.start()
            assert policy.running.wait(TIMEOUT_S)
            background.stop()
            thread.join(TIMEOUT_S)
            with pytest.raises(ConnectionClosed) as closed:
                robot.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd.code == wire.CLOSE_GOING_AWAY
        with pytest.raises(OSError):
            http_get(port, "/healthz")
    np.testing.assert_array_equal(answers[0]["actions"], expected_actions(np.ones(2)))


SERVER_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    import numpy as np
    from openpi_core.serving import PolicyServer, ServerConfig

    class SlowPolicy:
        metadata = {"name": "slow"}
        def prepare(self, observation):
            return np.asarray(observation["state"], np.float32)
        def batch_key(self, prepared):
            return prepared.shape
        def run(self, prepared):
            print("RUNNING", flush=True)
            time.sleep(1.0)
            return [{"actions": 2 * p[None]} for p in prepared]

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    PolicyServer(SlowPolicy(), ServerConfig(port=0, api_key=None)).run()
    print("EXITED", flush=True)
    """
)


def test_sigterm_stops_a_server_process_gracefully(tmp_path):
    script = tmp_path / "serve_slow.py"
    script.write_text(SERVER_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(3 * TIMEOUT_S, process.kill)  # bounds every read below
    timer.start()
    try:
        port = int(_read_until(process, "serving on ws://").split(":")[2].split()[0])
        _read_until(process, "ready")
        answers: list[dict] = []
        with connect(f"ws://127.0.0.1:{port}", compression=None, open_timeout=TIMEOUT_S) as robot:
            assert wire.unpack(robot.recv(timeout=TIMEOUT_S)) == {"name": "slow"}
            thread = threading.Thread(target=lambda: answers.append(ask(robot, np.ones(2, np.float32))))
            thread.start()
            _read_until(process, "RUNNING")
            process.send_signal(signal.SIGTERM)
            thread.join(TIMEOUT_S)
        rest = process.stdout.read()
        assert process.wait(TIMEOUT_S) == 0
        assert "shutdown signal received" in rest and rest.rstrip().endswith("EXITED")
        np.testing.assert_array_equal(answers[0]["actions"], [[2.0, 2.0]])
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT_S)


def _read_until(process: subprocess.Popen, text: str) -> str:
    """The first line of output holding ``text`` (the caller's timer kills a silent process)."""
    seen = []
    for line in process.stdout:
        if text in line:
            return line
        seen.append(line)
    raise AssertionError(f"{text!r} never printed; output:\n{''.join(seen)}")


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    raise AssertionError(f"{series} not in metrics:\n{text}")


class GatedPolicy(FakePolicy):
    """A :class:`FakePolicy` whose ``run`` waits for ``gate`` (so requests pile up behind it)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def run(self, prepared: list[dict]) -> list[dict]:
        self.running.set()
        assert self.gate.wait(TIMEOUT_S)
        return super().run(prepared)


def test_a_non_finite_answer_is_never_sent_and_is_counted():
    # 3e38 is a finite float32, but the fake policy's 2 * state + 0.5 overflows to inf,
    # as a real model's activations do.
    with serve(FakePolicy()) as background:
        port = background.server.port
        with open_robot(port) as robot:
            text, code = refusal(robot, wire.pack({"state": np.array([3e38, 1.0], np.float32)}))
        with open_robot(port) as robot:
            np.testing.assert_array_equal(ask(robot, np.ones(2, np.float32))["actions"], expected_actions(np.ones(2)))
        _, _, metrics = http_get(port, "/metrics")
    assert text.startswith("OpenpiError: the policy answered a non-finite value in 'actions'")
    assert code == wire.CLOSE_INTERNAL_ERROR
    assert _metric(metrics, 'openpi_errors_total{kind="non_finite_output"}') == 1


def test_more_robots_than_max_connections_are_refused_at_the_handshake_until_one_leaves():
    with serve(FakePolicy(), max_connections=2) as background:
        port = background.server.port
        with open_robot(port), open_robot(port) as second:
            with pytest.raises(InvalidStatus) as refused, open_robot(port):
                pass
            assert ask(second, np.ones(2, np.float32))["actions"].shape == (HORIZON, 2)
        response = refused.value.response
        assert response.status_code == 503 and b"2 robots are connected" in response.body
        with open_robot(port) as robot:  # both left: admitted again
            np.testing.assert_array_equal(ask(robot, np.ones(2, np.float32))["actions"], expected_actions(np.ones(2)))
        _, _, metrics = http_get(port, "/metrics")
    assert _metric(metrics, 'openpi_errors_total{kind="too_many_connections"}') == 1


def test_a_request_beyond_max_queue_is_refused_with_1013_and_the_queued_one_is_answered():
    policy = GatedPolicy()
    with serve(policy, max_queue=1) as background:
        port = background.server.port
        with open_robot(port) as first, open_robot(port) as second:
            first.send(wire.pack({"state": np.ones(2, np.float32)}))
            assert policy.running.wait(TIMEOUT_S)
            text, code = refusal(second, wire.pack({"state": np.ones(2, np.float32)}))
            policy.gate.set()
            np.testing.assert_array_equal(
                wire.unpack(first.recv(timeout=TIMEOUT_S))["actions"], expected_actions(np.ones(2))
            )
        _, _, metrics = http_get(port, "/metrics")
    assert text.startswith("OpenpiError: server is busy: 1 requests are queued") and "retry" in text
    assert code == wire.CLOSE_TRY_AGAIN_LATER
    assert _metric(metrics, 'openpi_errors_total{kind="busy"}') == 1


def test_requests_of_robots_that_left_are_never_computed():
    policy = GatedPolicy()
    with serve(policy) as background:
        port = background.server.port
        with open_robot(port) as busy:
            busy.send(wire.pack({"state": np.ones(2, np.float32)}))
            assert policy.running.wait(TIMEOUT_S)
            for _ in range(5):  # send one request each, then hang up without waiting
                with open_robot(port) as leaver:
                    leaver.send(wire.pack({"state": np.full(2, 7.0, np.float32)}))
            deadline = time.monotonic() + TIMEOUT_S
            while _abandoned(port) < 5:
                assert time.monotonic() < deadline, "the abandoned requests were never dropped"
                time.sleep(0.01)
            policy.gate.set()
            assert busy.recv(timeout=TIMEOUT_S)
            np.testing.assert_array_equal(
                ask(busy, np.full(2, 3.0, np.float32))["actions"], expected_actions(np.full(2, 3.0))
            )
    assert policy.batch_sizes == [1, 1]  # the busy robot's two requests, nothing for the five that left


def test_a_pipelining_robot_is_not_read_ahead_of_its_request():
    policy = GatedPolicy()
    frame = wire.pack({"state": np.ones(2, np.float32), "pad": np.zeros(256 * 1024, np.uint8)})
    with serve(policy, recv_queue=1) as background:
        port = background.server.port
        with open_robot(port) as robot:
            robot.send(frame)
            assert policy.running.wait(TIMEOUT_S)
            for _ in range(12):
                robot.send(frame)
            (connection,) = background.server._server.connections
            deadline = time.monotonic() + TIMEOUT_S
            while connection.transport.is_reading():
                assert time.monotonic() < deadline, "the server kept reading frames it cannot answer yet"
                time.sleep(0.01)
            policy.gate.set()
            answers = [wire.unpack(robot.recv(timeout=TIMEOUT_S)) for _ in range(13)]
    assert all(np.array_equal(answer["actions"], expected_actions(np.ones(2))) for answer in answers)


def test_a_refused_request_is_logged_in_one_short_line_without_traceback(caplog):
    huge_dtype = {b"__ndarray__": True, b"data": b"", b"dtype": "f" * 100_000, b"shape": [0]}
    with serve(FakePolicy()) as background, open_robot(background.server.port) as robot:
        text, code = refusal(robot, msgpack.packb({"state": huge_dtype}))
    refused = [record for record in caplog.records if record.getMessage().startswith("refused a request")]
    assert code == wire.CLOSE_POLICY_VIOLATION
    assert text.startswith("WireError: unknown dtype 'ffff") and len(text.encode()) <= wire.MAX_ERROR_BYTES
    assert len(refused) == 1 and refused[0].exc_info is None
    assert len(refused[0].getMessage().encode()) <= wire.MAX_ERROR_BYTES + 100


def test_a_pipelining_robot_that_hangs_up_costs_no_model_time_though_its_frames_were_not_read():
    # Small frames: the unread ones and the hang-up fit in the server's TCP buffer. (Behind
    # more unread data than that, TCP itself holds the hang-up back until the server reads.)
    policy = GatedPolicy()
    frame = wire.pack({"state": np.full(2, 5.0, np.float32), "pad": np.zeros(16 * 1024, np.uint8)})
    with serve(policy) as background:
        port = background.server.port
        with open_robot(port) as busy:
            busy.send(wire.pack({"state": np.ones(2, np.float32)}))
            assert policy.running.wait(TIMEOUT_S)
            with open_robot(port) as pipeliner:
                for _ in range(6):
                    pipeliner.send(frame)
                pipeliner.socket.shutdown(socket.SHUT_RDWR)  # no closing handshake: only the socket says so
            deadline = time.monotonic() + TIMEOUT_S
            while _abandoned(port) < 1:
                assert time.monotonic() < deadline, "the request of the robot that hung up was never dropped"
                time.sleep(0.01)
            policy.gate.set()
            np.testing.assert_array_equal(
                wire.unpack(busy.recv(timeout=TIMEOUT_S))["actions"], expected_actions(np.ones(2))
            )
            np.testing.assert_array_equal(ask(busy, np.ones(2, np.float32))["actions"], expected_actions(np.ones(2)))
    assert policy.batch_sizes == [1, 1]  # the busy robot's two requests only


MALLOC_PROBE = """
import ctypes, sys
from openpi_core.serving.server import return_large_buffers_to_os

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    assert return_large_buffers_to_os()
libc.free(libc.malloc(4 << 20))  # a freed frame: glibc's default then serves up to 4 MiB from the heap
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_foreground_server_has_freed_frames_returned_to_the_system():
    def mapped_bytes_of_a_1_mib_block(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], capture_output=True, text=True, check=True)
        return int(result.stdout)

    assert mapped_bytes_of_a_1_mib_block("default") == 0  # from the heap: kept after free
    assert mapped_bytes_of_a_1_mib_block("fixed") >= 1 << 20  # its own map: returned on free


def _abandoned(port: int) -> float:
    """Requests dropped because their robot left, so far (0 before the first: the series appears then)."""
    text = http_get(port, "/metrics")[2]
    return _metric(text, 'openpi_errors_total{kind="abandoned"}') if 'kind="abandoned"' in text else 0.0
