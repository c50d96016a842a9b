"""A minimal robot plugin: one camera, a small state, actions passed straight through."""

from openpi_embodiment_echo.echo import EchoEmbodiment

__all__ = ["EchoEmbodiment"]
