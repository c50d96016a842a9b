"""The ``torch`` backend as the plugin manager sees it.

Importing this module does not import torch: ``pi plugins`` lists the backend
without paying for it. torch is imported when a model is built.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.errors import InputError
from openpi_core.specs import AbstractBackend


class TorchBackend(AbstractBackend):
    """Builds π0 and π0.5 models in PyTorch."""

    name = "torch"
    families = ("pi0", "pi05")

    def load_model(
        self,
        path_or_params: str | Path | Mapping[str, np.ndarray],
        config: Any = None,
        *,
        device: str = "cpu",
    ) -> Any:
        """A :class:`~openpi_backend_torch.pi0.Pi0Model` from a checkpoint path, URL or
        mapping of arrays in any naming :func:`openpi_core.checkpoints.load_checkpoint`
        reads. ``config`` (a :class:`~openpi_core.models.config.Pi0Config`) overrides the
        stored one; its ``dtype`` picks float32 or the bfloat16 fast path.

        Raises:
            WeightsError: the weights are not recognised or do not fit the config.
            InputError: the checkpoint is of a family this backend does not build.
        """
        from openpi_backend_torch.pi0 import Pi0Model
        from openpi_core.checkpoints import load_checkpoint

        config, params = load_checkpoint(path_or_params, config)
        family = getattr(config, "family", type(config).__name__)
        if family not in self.families:
            raise InputError(f"the torch backend builds the families {list(self.families)}, not {family!r}")
        return Pi0Model.from_params(config, params, device=device)
