"""Registers the ALOHA embodiment, its presets, its simulator commands and demo with openpi (entry point ``aloha`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_aloha.aloha import AlohaEmbodiment
from openpi_embodiment_aloha.presets import PRESETS


@hookimpl
def openpi_register_embodiments(register):
    register(AlohaEmbodiment())


@hookimpl
def openpi_register_configs(register):
    for preset in PRESETS:
        register(preset)


@hookimpl
def openpi_register_commands(cli):
    from openpi_embodiment_aloha.sim.cli import register

    register(cli)


@hookimpl
def openpi_register_demos(register):
    from openpi_embodiment_aloha.sim.demo import DEMO

    register(DEMO)
