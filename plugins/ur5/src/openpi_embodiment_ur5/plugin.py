"""Registers the UR5 embodiment with openpi (entry point ``ur5`` in group ``openpi``)."""

from openpi_core import hookimpl
from openpi_embodiment_ur5.ur5 import UR5Embodiment


@hookimpl
def openpi_register_embodiments(register):
    register(UR5Embodiment())
