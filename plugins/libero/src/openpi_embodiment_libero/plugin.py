"""Registers the LIBERO embodiment with openpi (entry point ``libero`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_libero.libero import LiberoEmbodiment
from openpi_embodiment_libero.presets import PRESETS


@hookimpl
def openpi_register_embodiments(register):
    register(LiberoEmbodiment())


@hookimpl
def openpi_register_configs(register):
    for preset in PRESETS:
        register(preset)
