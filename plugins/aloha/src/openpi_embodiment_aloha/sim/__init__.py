"""A headless ALOHA simulator and a scripted expert, behind the ``sim`` extra.

:mod:`openpi_embodiment_aloha.sim.env` wraps gym-aloha's two tasks (transfer-cube and
insertion) with observations in the ALOHA embodiment's own format and a fast renderer;
:mod:`openpi_embodiment_aloha.sim.expert` solves both tasks through the same 14-dim
joint-position actions. Import those modules directly: this package imports nothing
heavy, so the embodiment works without MuJoCo installed.

On Linux without a display, importing this package makes ``MUJOCO_GL`` default to
``egl`` (MuJoCo picks its OpenGL backend once, when it is first imported); set it
yourself (``egl``, ``osmesa`` or ``glfw``) to choose otherwise.
"""

import os
import sys

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
