"""The DROID embodiment: Franka arm, 8-dim joint+gripper state, exterior and wrist cameras."""

from openpi_embodiment_droid.droid import DroidEmbodiment

__all__ = ["DroidEmbodiment"]
