"""``pi demo`` and ``pi run serve --demo`` as a user runs them: real processes, real plugins."""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("openpi_backend_torch")
pytest.importorskip("openpi_embodiment_aloha")

PI = [sys.executable, "-m", "openpi_cli"]
ENV = {**os.environ, "PI_LOAD_PLUGINS": "torch,aloha"}
ENV.pop("OPENPI_API_KEY", None)


@pytest.mark.slow
def test_pi_demo_prints_the_latency_table():
    args = [*PI, "demo", "--no-sim", "--requests", "20"]
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "RANDOM DEMO WEIGHTS" in out
    assert "backend torch" in out and "actions [10, 14]" in out and "20 requests" in out
    header = next(line for line in out.splitlines() if line.startswith("latency, ms"))
    assert header.split()[2:] == ["p50", "p90", "p99", "max"]
    for label in ("client round trip", "server (server_timing.infer_ms)", "model call (policy_timing.infer_ms)"):
        row = next(line for line in out.splitlines() if line.startswith(label))
        figures = [float(value) for value in row[len(label) :].split()]
        assert len(figures) == 4 and 0 < figures[0] <= figures[1] <= figures[2] <= figures[3]


@pytest.mark.slow
def test_pi_demo_drives_the_simulator_with_the_trained_policy_and_writes_videos(tmp_path):
    pytest.importorskip("openpi_embodiment_aloha.sim.evaluate", reason="needs openpi-embodiment-aloha[sim]")
    from openpi_core.data.lerobot import import_av

    args = [*PI, "demo", "--episodes", "1", "--video-dir", str(tmp_path)]
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "pi0_aloha_sim_small (pi0, backend torch) drives the simulated ALOHA" in result.stdout
    assert re.search(r"success rate: [01]/1 \(\d+%\) on transfer-cube", result.stdout), result.stdout
    with import_av().open(str(tmp_path / "transfer-cube_seed0.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 300 and (frames[0].height, frames[0].width) == (224, 224)


@pytest.mark.slow
def test_pi_demo_json_in_the_simulator_with_forced_progress(tmp_path):
    pytest.importorskip("openpi_embodiment_aloha.sim.evaluate", reason="needs openpi-embodiment-aloha[sim]")
    args = [*PI, "demo", "--episodes", "1", "--video-dir", str(tmp_path), "--json", "--progress"]
    result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["mode"] == "sim" and data["demo"] == "aloha-sim"
    results = data["results"]
    assert results["task"] == "transfer-cube" and results["policy"]["config"] == "pi0_aloha_sim_small"
    (episode,) = results["episodes"]
    assert episode["steps"] == 300 and episode["video"] == str(tmp_path / "transfer-cube_seed0.mp4")
    assert results["success_rate"] in (0.0, 1.0)
    assert "drives the simulated ALOHA" in result.stderr
    assert "pi demo transfer-cube" in result.stderr and "1/1" in result.stderr
    assert re.search(r"steps of this episode: +\d+%\|.*\| \d+/300 ", result.stderr)


@pytest.mark.slow
def test_pi_run_serve_demo_answers_the_aloha_sim_client_and_stops_on_sigterm():
    from openpi_core.client.websocket_client import WebsocketClientPolicy

    server = subprocess.Popen(
        [*PI, "run", "serve", "--demo", "--port", "0"], env=ENV, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in server.stderr], daemon=True).start()
    try:
        port = _bound_port(lines, server)
        with WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=120) as client:
            assert client.get_server_metadata()["action_horizon"] == 10
            # Exactly what openpi's examples/aloha_sim sends: no prompt, float64 state.
            rng = np.random.default_rng(0)
            observation = {
                "images": {"cam_high": rng.integers(0, 256, (3, 224, 224), dtype=np.uint8)},
                "state": rng.uniform(-1, 1, 14),
            }
            answer = client.infer(observation)
        assert np.asarray(answer["actions"]).shape == (10, 14)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _bound_port(lines: "queue.Queue[str]", server: subprocess.Popen) -> int:
    seen = []
    while True:
        try:
            line = lines.get(timeout=120)
        except queue.Empty:
            pytest.fail(f"pi run serve printed no 'serving on ws://' line; it printed: {''.join(seen)}")
        seen.append(line)
        match = re.search(r"serving on ws://127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
        if server.poll() is not None:
            pytest.fail(f"pi run serve exited with {server.returncode}: {''.join(seen)}")
