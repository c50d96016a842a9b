"""``pi run serve``'s server options reach the server: limits and the API key's sources."""

import pytest
from click.testing import CliRunner

from openpi_cli import serve as serve_module
from openpi_cli.main import cli
from openpi_core.serving import server as server_module
from openpi_core.wire import API_KEY_ENV


@pytest.fixture
def started(monkeypatch):
    """The ServerConfig that ``pi run serve`` would serve with (nothing is loaded or bound)."""
    configs = []

    class RecordingServer:
        def __init__(self, policy, config):
            configs.append(config)

        def run(self):
            pass

    monkeypatch.setattr(serve_module, "load_policy", lambda **options: object())
    monkeypatch.setattr(server_module, "PolicyServer", RecordingServer)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    return configs


def serve(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["run", "serve", "--demo", *args], env=env)


def test_limits_default_and_can_be_set(started):
    assert serve().exit_code == 0
    assert serve("--max-connections", "3", "--max-queue", "5").exit_code == 0
    assert (started[0].max_connections, started[0].max_queue) == (32, 32)
    assert (started[1].max_connections, started[1].max_queue) == (3, 5)
    assert serve("--max-queue", "0").exit_code == 2


def test_an_api_key_on_the_command_line_works_but_warns(started):
    result = serve("--api-key", "s3cret")
    assert result.exit_code == 0 and started[0].api_key == "s3cret"
    assert "visible to every user" in result.output and API_KEY_ENV in result.output


def test_an_api_key_from_the_environment_or_a_file_does_not_warn(started, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("from-file\nignored\n")
    from_env = serve(env={API_KEY_ENV: "from-env"})
    from_file = serve("--api-key-file", str(key_file))
    assert from_env.exit_code == 0 and from_file.exit_code == 0
    assert [config.api_key for config in started] == ["from-env", "from-file"]
    assert "visible to every user" not in from_env.output + from_file.output


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "cannot read"),
        ("\n", [], "holds no key on its first line"),
        ("k", ["--api-key", "x"], "--api-key or --api-key-file, not both"),
    ],
)
def test_a_bad_api_key_file_is_a_usage_error(started, tmp_path, content, extra, message):
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    result = serve("--api-key-file", str(key_file), *extra)
    assert result.exit_code == 2 and message in result.output and not started
