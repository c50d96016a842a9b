"""Entry point of the ``pi`` command.

Built-in subcommands are defined in this package; plugins add theirs through the
``openpi_register_commands`` hook. A plugin that fails to load never breaks ``pi``:
``pi plugins`` shows it with its error.
"""

import logging
import os

import click

from openpi_cli.bench import bench
from openpi_cli.convert import convert
from openpi_cli.data import data
from openpi_cli.demo import demo
from openpi_cli.inspect import configs, embodiments, plugins
from openpi_cli.norm_stats import norm_stats
from openpi_cli.serve import run
from openpi_cli.train import train
from openpi_core import __version__
from openpi_core.plugins import get_plugin_manager


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pi", message="%(prog)s (openpi-core) %(version)s")
def cli() -> None:
    """Run, serve, train, convert and check π-family robot policies."""


cli.add_command(plugins)
cli.add_command(configs)
cli.add_command(embodiments)
cli.add_command(convert)
cli.add_command(bench)
cli.add_command(data)
cli.add_command(norm_stats)
run.add_command(train)
cli.add_command(run)
cli.add_command(demo)


def main() -> None:
    """Console-script entry: add plugin commands, then run."""
    tracing = os.environ.get("PI_TRACE_PLUGINS", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO if tracing else logging.WARNING, format="pi: %(levelname)s: %(message)s")
    get_plugin_manager().add_commands(cli)
    cli()
