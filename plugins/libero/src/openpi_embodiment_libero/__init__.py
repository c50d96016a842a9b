"""The LIBERO embodiment: simulated Franka, 8-dim eef state, 7-dim actions, two cameras."""

from openpi_embodiment_libero.libero import LiberoEmbodiment

__all__ = ["LiberoEmbodiment"]
