"""Registers the DROID embodiment with openpi (entry point ``droid`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_droid.droid import DroidEmbodiment
from openpi_embodiment_droid.presets import PRESETS


@hookimpl
def openpi_register_embodiments(register):
    register(DroidEmbodiment())


@hookimpl
def openpi_register_configs(register):
    for preset in PRESETS:
        register(preset)
