"""``pi conformance --progress`` draws a bar over the checks on stderr; off a terminal the output stays pytest's own."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("openpi_conformance")
pytest.importorskip("openpi_embodiment_ur5")


def run_conformance(*extra: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PI_")}
    environment["PI_LOAD_PLUGINS"] = "conformance,ur5"
    args = ["conformance", "--embodiments", "ur5", "--family", "pi0", "--dtype", "float32", *extra]
    return subprocess.run(
        [sys.executable, "-m", "openpi_cli", *args], capture_output=True, text=True, env=environment, timeout=300
    )


def test_forced_progress_counts_every_check_on_stderr_in_place_of_dots():
    result = run_conformance("--progress")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = int(result.stdout.split(" passed")[0].split()[-1])
    assert checks >= 3
    assert "conformance:   0%" in result.stderr and f"| {checks}/{checks} [" in result.stderr
    assert "test_examples_are_deterministic[ur5]" in result.stderr  # the check running is named
    assert "." * checks not in result.stdout


def test_without_a_terminal_there_is_no_bar():
    result = run_conformance()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "conformance:" not in result.stderr and "\r" not in result.stderr
    assert "..." in result.stdout
