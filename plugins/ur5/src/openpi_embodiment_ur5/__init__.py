"""The UR5 embodiment: 6 joints + gripper, base and wrist cameras."""

from openpi_embodiment_ur5.ur5 import UR5Embodiment

__all__ = ["UR5Embodiment"]
