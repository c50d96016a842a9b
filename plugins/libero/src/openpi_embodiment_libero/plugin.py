"""Registers the LIBERO embodiment with openpi (entry point ``libero`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_libero.libero import LiberoEmbodiment


@hookimpl
def openpi_register_embodiments(register):
    register(LiberoEmbodiment())
