"""Registers the DROID embodiment with openpi (entry point ``droid`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_droid.droid import DroidEmbodiment


@hookimpl
def openpi_register_embodiments(register):
    register(DroidEmbodiment())
