"""Registers the echo robot. Keep plugin modules cheap to import: pluggy imports them eagerly."""

from openpi_core import hookimpl
from openpi_embodiment_echo.echo import EchoEmbodiment


@hookimpl
def openpi_register_embodiments(register):
    register(EchoEmbodiment())
