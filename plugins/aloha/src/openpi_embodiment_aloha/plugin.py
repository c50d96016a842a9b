"""Registers the ALOHA embodiment with openpi (entry point ``aloha`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_aloha.aloha import AlohaEmbodiment


@hookimpl
def openpi_register_embodiments(register):
    register(AlohaEmbodiment())
