"""The contract a backend's trainer fulfils; the loop in :mod:`openpi_core.training.loop`
drives it the same way for every backend.

The loop draws noise and flow-matching times in numpy from the run's seed and passes
the learning rate for each step, so two backends given the same weights and batch take
the same step, and a resumed run continues exactly.
"""

import abc
from collections.abc import Mapping

import numpy as np

from openpi_core.observation import Observation


class AbstractTrainer(abc.ABC):
    """One model's parameters, optimizer state and EMA weights in one backend.

    Parameter names are canonical (plus ``*.lora_a`` / ``*.lora_b`` adapters, see
    :mod:`openpi_core.training.lora`). Frozen parameters get no optimizer state.
    """

    @abc.abstractmethod
    def step(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray, lr: float
    ) -> dict[str, float]:
        """One AdamW update (global-norm clipping, decoupled weight decay on trainable
        weights) on the mean flow-matching loss, then the EMA update. Returns at least
        ``loss`` (before the update) and ``grad_norm`` (before clipping)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume bit for bit: ``params/<name>``, ``opt/<slot>/<name>``,
        ``ema/<name>`` and ``opt/count`` as numpy arrays."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @abc.abstractmethod
    def inference_params(self) -> dict[str, np.ndarray]:
        """Canonical weights to serve: the EMA weights when EMA is on, with LoRA adapters
        merged into their base weights, float32."""
