"""Every ``pi ...`` command line in the README's bash blocks parses with the installed ``pi``.

Each line goes through click's own parser (``make_context``, resilient parsing off), so
an option or subcommand that does not exist, a missing argument or an invalid choice
fails here. Path arguments must exist, except placeholders for the reader's own files,
which start with ``./`` or ``../`` (``./my_dataset``): those are created empty first.
"""

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

from openpi_cli.main import cli
from openpi_core.plugins import PluginManager

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_SEPARATORS = {"&&", "||", ";", "|"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def pi_commands(text: str) -> list[list[str]]:
    """The arguments of every ``pi`` (or ``.venv/bin/pi``) invocation in ``text``'s bash blocks."""
    commands = []
    for block in bash_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            start = None
            for index, word in enumerate([*words, "&&"]):
                if word in SHELL_SEPARATORS:
                    if start is not None:
                        commands.append(words[start:index])
                    start = None
                elif start is None and (word == "pi" or word.endswith("/bin/pi")):
                    start = index + 1
    return commands


def test_the_readme_has_pi_commands_to_check():
    commands = pi_commands(README.read_text())
    assert len(commands) >= 20
    assert ["demo"] in commands


def test_the_extraction_joins_continued_lines_and_splits_chains():
    text = "```bash\nbash x.sh && .venv/bin/pi demo   # run it\npi run train --a b \\\n    --c d\n```\n"
    assert pi_commands(text) == [["demo"], ["run", "train", "--a", "b", "--c", "d"]]


COMMAND_PLUGINS = {"aloha": "openpi_embodiment_aloha.plugin", "conformance": "openpi_conformance.plugin"}
"""The plugins that add the commands the README shows (``pi run eval aloha-sim``, ``pi conformance``, …)."""

MISSING_PLUGINS: list[str] = []


@pytest.fixture(scope="module")
def pi_with_plugins():
    modules = []
    for name, module_name in COMMAND_PLUGINS.items():
        try:
            modules.append((name, importlib.import_module(module_name)))
        except ImportError:
            MISSING_PLUGINS.append(name)
    PluginManager(entry_points=False, plugins=modules).add_commands(cli)
    return cli


def resolve(group: click.Group, args: list[str]) -> tuple[click.Command, list[str], str]:
    """The subcommand ``args`` name, the arguments left for it, and its full name."""
    command, names = group, ["pi"]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        if sub is None and MISSING_PLUGINS:
            pytest.skip(f"`{' '.join(names)} {args[0]}` may come from a plugin not installed: {MISSING_PLUGINS}")
        if sub is None:
            pytest.fail(f"`{' '.join(names)}` has no subcommand {args[0]!r}")
        command, names, args = sub, [*names, args[0]], args[1:]
    return command, args, " ".join(names)


def placeholders(args: list[str], scratch: Path) -> list[str]:
    """``args`` with each missing ``./`` or ``../`` path swapped for an empty stand-in under ``scratch``."""
    replaced = []
    for arg in args:
        if arg.startswith(("./", "../")) and not (ROOT / arg).exists():
            stand_in = scratch / arg.replace("../", "up/").lstrip("./")
            if stand_in.suffix:
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.touch()
            else:
                stand_in.mkdir(parents=True, exist_ok=True)
            arg = str(stand_in)
        replaced.append(arg)
    return replaced


@pytest.mark.parametrize("args", pi_commands(README.read_text()), ids=lambda args: " ".join(args)[:80])
def test_readme_command_parses(args, pi_with_plugins, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    command, rest, name = resolve(pi_with_plugins, list(args))
    if isinstance(command, click.Group) and not rest:
        return  # a bare group prints its help
    try:
        command.make_context(name, placeholders(rest, tmp_path), resilient_parsing=False)
    except click.ClickException as error:
        pytest.fail(f"README: `{' '.join(['pi', *args])}` does not parse: {error.format_message()}")


def test_a_readme_command_with_an_unknown_option_fails_the_check(pi_with_plugins, monkeypatch):
    monkeypatch.chdir(ROOT)
    command, rest, name = resolve(pi_with_plugins, ["run", "train", "--no-such-option", "1"])
    with pytest.raises(click.NoSuchOption):
        command.make_context(name, rest, resilient_parsing=False)


def test_the_training_config_the_readme_uses_is_in_the_repository_and_loads():
    from openpi_cli.train import read_config_file
    from openpi_core.serialization import structure
    from openpi_core.training.config import TrainConfig

    text = README.read_text()
    used = {args[args.index("--train-config") + 1] for args in pi_commands(text) if "--train-config" in args}
    assert used == {"examples/sim_small.toml"}
    config = structure(read_config_file(ROOT / "examples" / "sim_small.toml"), TrainConfig)
    assert (config.batch_size, config.num_train_steps, config.episode_starts.frames) == (32, 15000, 60)


def test_the_readme_and_the_help_name_every_family_pi_conformance_checks_by_default(pi_with_plugins):
    command, _, _ = resolve(pi_with_plugins, ["conformance"])
    families = next(param.default for param in command.params if param.name == "family").split(",")
    assert "pi0_fast" in families
    line = next(line for line in README.read_text().splitlines() if line.startswith("pi conformance  "))
    assert set(re.findall(r"\bpi0\w*", line.split("#", 1)[1])) == set(families)
    help_text = " ".join(command.get_help(click.Context(command)).split())
    assert "π0, π0.5 and π0-FAST" in help_text
