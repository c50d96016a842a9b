"""The ``jax`` backend object. jax is imported only when a model is built."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.checkpoints import load_checkpoint
from openpi_core.errors import InputError
from openpi_core.specs import AbstractBackend


class JaxBackend(AbstractBackend):
    """JAX/Equinox models of π0 and π0.5 (:class:`openpi_backend_jax.pi0.Pi0Model`)."""

    name = "jax"
    families = ("pi0", "pi05")

    def load_model(self, path_or_params: str | Path | Mapping[str, np.ndarray], config: Any = None) -> Any:
        """Build a :class:`~openpi_backend_jax.pi0.Pi0Model` from any checkpoint or
        parameter mapping :func:`openpi_core.checkpoints.load_checkpoint` reads;
        ``config`` (a :class:`~openpi_core.models.config.Pi0Config`) overrides the one
        stored with, or inferred from, the weights.

        Raises:
            InputError: the config names a family this backend does not build.
            WeightsError: the weights are unreadable or do not fit the config.
        """
        config, params = load_checkpoint(path_or_params, config)
        if config.family not in self.families:
            raise InputError(f"the jax backend builds families {list(self.families)}, not {config.family!r}")
        from openpi_backend_jax.pi0 import Pi0Model

        return Pi0Model.from_params(config, params)
