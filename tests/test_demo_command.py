"""``pi demo`` picks a plugin's demo through ``openpi_register_demos``, else measures latency; ``--json``
and ``--progress`` on it; and where ``pi run serve --demo`` checks the backend."""

import json
import types

import pytest
from click.testing import CliRunner

from openpi_cli.main import cli
from openpi_core import hookimpl, launch
from openpi_core.errors import UnknownNameError
from openpi_core.plugins import PluginManager, use_plugin_manager
from openpi_core.specs import Demo, DemoResult

aloha_plugin = pytest.importorskip("openpi_embodiment_aloha.plugin")


def demo_plugin(name: str, missing: str | None = None) -> tuple[types.ModuleType, list]:
    """A plugin registering one demo that records the options it ran with."""
    runs: list = []

    def run(options):
        runs.append(options)
        options.echo(f"{name} is running")
        return DemoResult(summary=f"{name}: 2/2 episodes", data={"success_rate": 1.0, "episodes": options.episodes})

    module = types.ModuleType(name)

    @hookimpl
    def openpi_register_demos(register):
        register(Demo(name=name, description="a fake simulator", run=run, missing=lambda: missing))

    module.openpi_register_demos = openpi_register_demos
    return module, runs


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def test_pi_demo_runs_the_registered_demo_and_prints_its_summary(tmp_path):
    module, runs = demo_plugin("fakesim")
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("fakesim", module)])):
        result = invoke("demo", "--episodes", 2, "--video-dir", tmp_path, "--backend", "jax")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["fakesim is running", "fakesim: 2/2 episodes"]
    (options,) = runs
    assert (options.episodes, options.video_dir, options.backend, options.progress) == (2, tmp_path, "jax", None)


def test_pi_demo_json_prints_only_json_on_stdout():
    module, runs = demo_plugin("fakesim")
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("fakesim", module)])):
        result = invoke("demo", "--json", "--episodes", 4, "--progress")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "mode": "sim",
        "demo": "fakesim",
        "results": {"success_rate": 1.0, "episodes": 4},
    }
    assert "fakesim is running" in result.stderr
    assert runs[0].progress is True


def test_pi_demo_no_sim_skips_the_registered_demo(monkeypatch):
    module, runs = demo_plugin("fakesim")
    monkeypatch.setattr(
        "openpi_cli.demo._latency_demo", lambda backend, requests, progress, echo: ({"mode": "latency"}, "table")
    )
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("fakesim", module)])):
        result = invoke("demo", "--no-sim", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"mode": "latency"} and runs == []


def test_pi_demo_falls_back_to_latency_when_no_demo_can_run(monkeypatch):
    module, runs = demo_plugin("fakesim", missing="needs the fake simulator: pip install fakesim")
    monkeypatch.setattr(
        "openpi_cli.demo._latency_demo", lambda backend, requests, progress, echo: ({"mode": "latency"}, "table")
    )
    with use_plugin_manager(PluginManager(entry_points=False, plugins=[("fakesim", module)])):
        fallback = invoke("demo")
        forced = invoke("demo", "--sim")
    assert fallback.exit_code == 0 and fallback.stdout.strip() == "table" and runs == []
    assert forced.exit_code == 1
    assert "fakesim: needs the fake simulator: pip install fakesim (or use --no-sim)" in forced.output


def test_pi_demo_sim_without_any_demo_says_what_to_install():
    with use_plugin_manager(PluginManager(entry_points=False)):
        result = invoke("demo", "--sim")
    assert result.exit_code == 1
    assert (
        'no simulator demo is installed; pip install "openpi-embodiment-aloha[sim]" (or use --no-sim)' in result.output
    )


def test_the_aloha_plugin_registers_its_simulator_demo(monkeypatch):
    pytest.importorskip("openpi_embodiment_aloha.sim.evaluate", reason="needs openpi-embodiment-aloha[sim]")
    manager = PluginManager(entry_points=False, plugins=[("aloha", aloha_plugin)])
    demo = manager.registry("demo").get("aloha-sim")
    assert "pi0_aloha_sim_small" in demo.description and demo.missing() is None
    monkeypatch.setitem(__import__("sys").modules, "openpi_embodiment_aloha.sim.evaluate", None)
    assert 'pip install "openpi-embodiment-aloha[sim]"' in demo.missing()


@pytest.fixture(scope="module")
def torch_manager():
    pytest.importorskip("torch")
    torch_plugin = pytest.importorskip("openpi_backend_torch.plugin")
    return PluginManager(entry_points=False, plugins=[("torch", torch_plugin), ("aloha", aloha_plugin)])


def test_pi_demo_latency_json_and_forced_progress(torch_manager):
    with use_plugin_manager(torch_manager):
        result = invoke("demo", "--no-sim", "--requests", 3, "--json", "--progress")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["mode"] == "latency" and data["requests"] == 3
    assert data["policy"]["backend"] == "torch" and data["policy"]["action_horizon"] == 10
    assert set(data["latency_ms"]) == {"round_trip", "server", "policy"}
    for figures in data["latency_ms"].values():
        assert list(figures) == ["p50", "p90", "p99", "max"]
        assert 0 < figures["p50"] <= figures["p90"] <= figures["p99"] <= figures["max"]
    assert "RANDOM DEMO WEIGHTS" in result.stderr
    assert "pi demo requests" in result.stderr and "3/3" in result.stderr


def test_pi_demo_output_off_a_terminal_has_no_progress_bar(torch_manager):
    with use_plugin_manager(torch_manager):
        result = invoke("demo", "--no-sim", "--requests", 2)
    assert result.exit_code == 0, result.output
    assert "latency, ms" in result.stdout
    assert "pi demo requests" not in result.output and "it/s" not in result.output and "\r" not in result.output


def test_serve_demo_with_a_backend_that_does_not_exist_fails_before_announcing_random_weights(torch_manager):
    with use_plugin_manager(torch_manager):
        result = invoke("run", "serve", "--demo", "--backend", "nosuch", "--port", 0)
    assert result.exit_code == 1
    assert "no backend named 'nosuch' is installed" in result.output
    assert "RANDOM WEIGHTS" not in result.output


def test_load_policy_looks_up_the_backend_before_announcing(torch_manager):
    announced = []
    with use_plugin_manager(torch_manager), pytest.raises(UnknownNameError, match="nosuch"):
        launch.load_policy(demo=True, backend="nosuch", announce=announced.append)
    assert announced == []
    with use_plugin_manager(torch_manager):
        policy = launch.load_policy(demo=True, backend="torch", num_steps=2, announce=announced.append)
    assert announced == [launch.DEMO_WARNING] and policy.metadata["num_steps"] == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"demo": True, "config_name": "pi0_aloha_sim"}, "--demo serves the bundled checkpoint; drop --config"),
        ({"checkpoint": "./ckpt"}, "say what to serve"),
        ({}, "say what to serve"),
    ],
)
def test_load_policy_refuses_options_that_name_no_single_policy(options, message):
    with pytest.raises(launch.PolicySourceError, match=message):
        launch.load_policy(**options)
