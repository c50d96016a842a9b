"""``pi bench``: π0-FAST rows next to π0 rows, the chunk split, the FAST/π0 ratio, usage errors.

No timing thresholds: the arithmetic is checked exactly against a fake clock, and the real
backends only for fields that hold whatever the machine's load.
"""

import json
import math
import types

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli import bench as bench_module
from openpi_cli.bench import FAST_CHUNK_TOKENS, bench
from openpi_core.plugins import PluginManager, use_plugin_manager

FAST_FIELDS = ("first_call_ms", "chunk_ms", "prefix_ms", "step_ms", "fast_over_pi0", "params_m")


def run(tmp_path, *args: str):
    result = CliRunner().invoke(bench, [*args, "--json", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text()) if result.exit_code == 0 else None
    return result, rows


def by_family(rows: list[dict]) -> dict[str, dict]:
    return {row["family"]: row for row in rows}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class FakeModel:
    """Advances the fake clock by ``prefix + passes * step`` per call, as a real backend
    would: π0 runs one pass per denoising step, π0-FAST one per token after the first."""

    def __init__(self, config, clock: FakeClock, decoded: int | None) -> None:
        self.fast = config.family == "pi0_fast"
        self.clock = clock
        self.decoded = decoded
        self.compiled = False

    def compile(self) -> None:
        self.compiled = True

    def sample_actions(self, observation, noise=None, num_steps=None, seed=0):
        assert (noise is None) == self.fast
        if self.fast:
            assert observation.token_ar_mask is not None
            self.clock.now += 0.040 + (num_steps - 1) * 0.020
        else:
            self.clock.now += 0.030 + num_steps * 0.005

    def decode(self, observation, num_steps):
        steps = num_steps if self.decoded is None else self.decoded
        return np.zeros((1, steps), np.int32), np.zeros((1, steps, 8), np.float32)


@pytest.fixture
def fake_backend(monkeypatch):
    """A ``fake`` backend whose latencies are exact: π0 prefix 30 ms and 5 ms a step,
    π0-FAST prefill 40 ms and 20 ms a token. ``models`` collects what it built."""
    clock = FakeClock()
    backend = types.SimpleNamespace(models=[], decoded=None)

    def load_model(params, config):
        backend.models.append(FakeModel(config, clock, backend.decoded))
        return backend.models[-1]

    backend.load_model = load_model
    monkeypatch.setattr(bench_module, "time", clock)
    monkeypatch.setattr(bench_module, "get_backend", lambda name: backend)
    return backend


def test_fast_rows_split_a_chunk_into_prefill_and_decoded_tokens(fake_backend, tmp_path):
    result, rows = run(tmp_path, "--backends", "fake", "--family", "pi0,pi0_fast", "--cameras", "2", "--repeats", "1")
    assert result.exit_code == 0, result.output
    pi0, fast = by_family(rows)["pi0"], by_family(rows)["pi0_fast"]
    assert pi0["prefix_ms"] == pytest.approx(30.0)
    assert pi0["step_ms"] == pytest.approx(5.0)
    assert pi0["chunk_ms"] == pytest.approx(80.0)
    assert pi0["tokens_per_s"] is None and pi0["fast_over_pi0"] is None
    # The first token comes from the prefill's logits: a chunk is prefix + (N - 1) steps.
    assert fast["chunk_steps"] == FAST_CHUNK_TOKENS
    assert fast["prefix_ms"] == pytest.approx(40.0)
    assert fast["step_ms"] == pytest.approx(20.0)
    assert fast["chunk_ms"] == pytest.approx(40.0 + (FAST_CHUNK_TOKENS - 1) * 20.0)
    assert fast["tokens_per_s"] == pytest.approx(50.0)
    assert fast["fast_over_pi0"] == pytest.approx(fast["chunk_ms"] / 80.0)
    assert not fast["compiled"] and not any(model.compiled for model in fake_backend.models)
    assert "fast_over_pi0" in result.output


def test_compile_flag_compiles_models_that_can(fake_backend, tmp_path):
    result, rows = run(tmp_path, "--backends", "fake", "--family", "pi0_fast", "--repeats", "1", "--compile")
    assert result.exit_code == 0, result.output
    assert rows[0]["compiled"] and fake_backend.models[0].compiled
    assert "torch.compile" in result.output


def test_a_fast_decode_that_stops_early_is_an_error(fake_backend, tmp_path):
    fake_backend.decoded = 7
    result, _ = run(tmp_path, "--backends", "fake", "--family", "pi0_fast", "--repeats", "1")
    assert result.exit_code == 1
    assert f"stopped after 7 of {FAST_CHUNK_TOKENS} tokens" in result.output


def test_unknown_family_is_a_usage_error(tmp_path):
    result, _ = run(tmp_path, "--family", "pi0,pi1")
    assert result.exit_code == 2
    assert "Invalid value for --family" in result.output
    assert "unknown family 'pi1'" in result.output and "pi0_fast" in result.output


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_pi0_fast_row_on_a_real_backend(backend, tmp_path):
    plugin = pytest.importorskip(f"openpi_backend_{backend}.plugin")
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[(backend, plugin)])):
        result, rows = run(
            tmp_path, "--backends", backend, "--family", "pi0,pi0_fast", "--cameras", "2", "--repeats", "1"
        )
    assert result.exit_code == 0, result.output
    fast = by_family(rows)["pi0_fast"]
    assert {field: fast[field] for field in ("backend", "size", "cameras", "chunk_steps")} == {
        "backend": backend,
        "size": "tiny",
        "cameras": 2,
        "chunk_steps": FAST_CHUNK_TOKENS,
    }
    assert all(isinstance(fast[field], float) and math.isfinite(fast[field]) for field in FAST_FIELDS)
    # The split is a difference of single noisy timings; only whole calls are surely positive.
    assert fast["first_call_ms"] > 0 and fast["chunk_ms"] > 0 and fast["params_m"] > 0
    assert fast["chunk_ms"] == pytest.approx(fast["prefix_ms"] + (FAST_CHUNK_TOKENS - 1) * fast["step_ms"])
    if fast["step_ms"] > 0:
        assert fast["tokens_per_s"] == pytest.approx(1000 / fast["step_ms"])
    else:
        assert math.isnan(fast["tokens_per_s"])
    assert fast["fast_over_pi0"] == pytest.approx(fast["chunk_ms"] / by_family(rows)["pi0"]["chunk_ms"])
