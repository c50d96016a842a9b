"""Adds ``pi conformance`` to the ``pi`` command."""

from openpi_core import hookimpl


@hookimpl
def openpi_register_commands(cli):
    from openpi_conformance.command import conformance

    cli.add_command(conformance)
