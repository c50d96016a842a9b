"""The ``jax`` backend object. jax is imported only when a model is built."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.checkpoints import load_checkpoint
from openpi_core.errors import InputError
from openpi_core.models.config import Pi0FASTConfig
from openpi_core.specs import AbstractBackend


class JaxBackend(AbstractBackend):
    """JAX/Equinox models of π0 and π0.5 (:class:`openpi_backend_jax.pi0.Pi0Model`) and
    π0-FAST (:class:`openpi_backend_jax.pi0_fast.Pi0FASTModel`), and their trainer
    (:class:`openpi_backend_jax.training.JaxTrainer`)."""

    name = "jax"
    families = ("pi0", "pi05", "pi0_fast")

    def load_model(self, path_or_params: str | Path | Mapping[str, np.ndarray], config: Any = None) -> Any:
        """Build a :class:`~openpi_backend_jax.pi0.Pi0Model` (a
        :class:`~openpi_backend_jax.pi0_fast.Pi0FASTModel` for a π0-FAST config) from any
        checkpoint or parameter mapping :func:`openpi_core.checkpoints.load_checkpoint`
        reads; ``config`` (a :class:`~openpi_core.models.config.Pi0Config` or
        ``Pi0FASTConfig``) overrides the one stored with, or inferred from, the weights.

        Raises:
            InputError: the config names a family this backend does not build.
            WeightsError: the weights are unreadable or do not fit the config.
        """
        config, params = load_checkpoint(path_or_params, config)
        if config.family not in self.families:
            raise InputError(f"the jax backend builds families {list(self.families)}, not {config.family!r}")
        if isinstance(config, Pi0FASTConfig):
            from openpi_backend_jax.pi0_fast import Pi0FASTModel

            return Pi0FASTModel.from_params(config, params)
        from openpi_backend_jax.pi0 import Pi0Model

        return Pi0Model.from_params(config, params)

    def create_trainer(self, model_config: Any, train_config: Any, params: Mapping[str, np.ndarray]) -> Any:
        """A :class:`~openpi_backend_jax.training.JaxTrainer` over every device (of every
        host, after :func:`~openpi_backend_jax.training.initialize_distributed`).

        Raises:
            InputError: the config names a family this backend cannot train, or the
                train config's precision or FSDP size does not fit.
            WeightsError: ``params`` do not fit the model and its adapters.
        """
        from openpi_backend_jax.training import TRAINED_FAMILIES, JaxTrainer, initialize_distributed

        if model_config.family not in TRAINED_FAMILIES:
            raise InputError(f"the jax backend trains families {list(TRAINED_FAMILIES)}, not {model_config.family!r}")

        initialize_distributed()
        return JaxTrainer(model_config, train_config, params)
