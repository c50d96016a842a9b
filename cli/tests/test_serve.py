"""``pi run serve`` and ``pi demo`` in-process: the demo policy, the server around it, usage errors."""

import asyncio

import numpy as np
import pytest
from click.testing import CliRunner

from openpi_cli.demo import aloha_sim_observation
from openpi_cli.main import cli
from openpi_core.launch import DEMO_CHECKPOINT, demo_policy
from openpi_core.plugins import PluginManager, use_plugin_manager

aloha_plugin = pytest.importorskip("openpi_embodiment_aloha.plugin")


@pytest.fixture(scope="module")
def torch_manager():
    pytest.importorskip("torch")
    torch_plugin = pytest.importorskip("openpi_backend_torch.plugin")
    return PluginManager(entry_points=False, plugins=[("torch", torch_plugin), ("aloha", aloha_plugin)])


@pytest.fixture(scope="module")
def policy(torch_manager):
    with use_plugin_manager(torch_manager):
        yield demo_policy("torch")


def test_demo_checkpoint_is_small_and_says_its_weights_are_random():
    files = [path for path in DEMO_CHECKPOINT.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 3_000_000
    names = {str(path.relative_to(DEMO_CHECKPOINT)) for path in files}
    assert {"model.safetensors", "manifest.json", "norm_stats.json", "assets/tokenizer.model", "README.md"} <= names
    assert "weights are random" in (DEMO_CHECKPOINT / "README.md").read_text()


def test_demo_policy_answers_aloha_sim_observations(policy):
    metadata = dict(policy.metadata)
    assert metadata.pop("real_time_chunking") == policy.real_time_chunking
    assert metadata == {
        "config": None,
        "embodiment": "aloha",
        "family": "pi0",
        "backend": "torch",
        "dtype": "float32",
        "action_horizon": 10,
        "action_dim": 14,
        "num_steps": 10,
    }
    result = policy.infer(aloha_sim_observation(np.random.default_rng(0)))
    assert result["actions"].shape == (10, 14) and np.all(np.isfinite(result["actions"]))


def test_a_batch_of_three_equals_three_single_calls_with_the_real_model(torch_manager):
    with use_plugin_manager(torch_manager):
        batched, single = demo_policy("torch"), demo_policy("torch")
    rng = np.random.default_rng(1)
    observations = [aloha_sim_observation(rng) for _ in range(3)]
    observations[1]["prompt"] = "fold the towel"
    together = batched.run([batched.prepare(obs) for obs in observations])
    for obs, result in zip(observations, together, strict=True):
        np.testing.assert_allclose(result["actions"], single.infer(obs)["actions"], atol=1e-4)


def test_served_over_the_websocket(policy):
    from openpi_core.client.websocket_client import ServerError, WebsocketClientPolicy
    from openpi_core.serving.server import PolicyServer, ServerConfig

    async def scenario():
        server = PolicyServer(policy, ServerConfig(port=0, api_key=None, max_batch=2))
        await server.start()
        try:
            await server.wait_ready()
            return await asyncio.to_thread(query, server.port)
        finally:
            await server.stop()

    def query(port):
        with WebsocketClientPolicy("127.0.0.1", port, wait_timeout_s=30) as client:
            assert client.get_server_metadata()["action_dim"] == 14
            answer = client.infer(aloha_sim_observation(np.random.default_rng(2)))
            bad = aloha_sim_observation(np.random.default_rng(3))
            bad["state"] = bad["state"][:7]
            with pytest.raises(ServerError) as refused:
                client.infer(bad)
            return answer, refused.value

    answer, refused = asyncio.run(scenario())
    assert np.asarray(answer["actions"]).shape == (10, 14)
    assert answer["policy_timing"]["infer_ms"] <= answer["server_timing"]["infer_ms"]
    assert refused.code == 1008 and "should have shape [14]" in str(refused) and "got [7]" in str(refused)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say what to serve"),
        (["--checkpoint", "x"], "say what to serve"),
        (["--demo", "--config", "pi0_aloha_sim"], "--demo serves the bundled checkpoint; drop --config"),
        (["--port", "70000"], "70000 is not in the range"),
    ],
)
def test_serve_usage_errors(args, message):
    result = CliRunner().invoke(cli, ["run", "serve", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_serve_reports_project_errors_without_a_traceback(torch_manager, tmp_path):
    with use_plugin_manager(torch_manager):
        result = CliRunner().invoke(
            cli, ["run", "serve", "--checkpoint", str(tmp_path / "absent"), "--embodiment", "aloha"]
        )
    assert result.exit_code == 1
    assert "Error: WeightsError: no checkpoint at" in result.output and "Traceback" not in result.output


def test_run_group_and_demo_are_listed():
    output = CliRunner().invoke(cli, ["--help"]).output
    assert "run " in output and "demo " in output
    assert "serve" in CliRunner().invoke(cli, ["run", "--help"]).output
