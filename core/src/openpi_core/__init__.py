"""Backend-neutral core of the π-family robot policies (π0, π0.5, π0-FAST).

Importing this package pulls in numpy and small pure-Python libraries only; jax,
torch and friends live in the backend distributions. Plugin authors need
:data:`hookimpl` to mark their hook implementations.
"""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("openpi-core")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

PROJECT_NAME = "openpi"
"""pluggy project name and entry-point group of every plugin."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Decorator that marks a plugin's implementation of an ``openpi_*`` hook."""

__all__ = ["PROJECT_NAME", "__version__", "hookimpl"]
