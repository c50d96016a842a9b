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
    """Builds π0, π0.5 and π0-FAST models in PyTorch."""

    name = "torch"
    families = ("pi0", "pi05", "pi0_fast")

    def load_model(
        self,
        path_or_params: str | Path | Mapping[str, np.ndarray],
        config: Any = None,
        *,
        device: str = "cpu",
    ) -> Any:
        """A :class:`~openpi_backend_torch.pi0.Pi0Model` (or, for a π0-FAST checkpoint, a
        :class:`~openpi_backend_torch.pi0_fast.Pi0FASTModel`) from a checkpoint path, URL or
        mapping of arrays in any naming :func:`openpi_core.checkpoints.load_checkpoint`
        reads. ``config`` (a :class:`~openpi_core.models.config.Pi0Config` or
        ``Pi0FASTConfig``) overrides the stored one; its ``dtype`` picks float32 or the
        bfloat16 fast path.

        Raises:
            WeightsError: the weights are not recognised or do not fit the config.
            InputError: the checkpoint is of a family this backend does not build.
        """
        from openpi_backend_torch.pi0 import Pi0Model
        from openpi_backend_torch.pi0_fast import Pi0FASTModel
        from openpi_core.checkpoints import load_checkpoint
        from openpi_core.models.config import Pi0FASTConfig

        config, params = load_checkpoint(path_or_params, config)
        family = getattr(config, "family", type(config).__name__)
        if family not in self.families:
            raise InputError(f"the torch backend builds the families {list(self.families)}, not {family!r}")
        if isinstance(config, Pi0FASTConfig):
            return Pi0FASTModel.from_params(config, params, device=device)
        return Pi0Model.from_params(config, params, device=device)

    def create_trainer(
        self,
        model_config: Any,
        train_config: Any,
        params: Mapping[str, np.ndarray],
        *,
        device: str | None = None,
    ) -> Any:
        """A :class:`~openpi_backend_torch.training.TorchTrainer` starting from canonical
        ``params`` (plus the LoRA adapters ``train_config`` asks for). Under ``torchrun``
        it joins the job's process group (see :mod:`openpi_backend_torch.distributed`).
        ``device`` None: this rank's GPU when CUDA is available, else the CPU.

        Raises:
            InputError: the config is of a family this backend does not train, or the
                train config is inconsistent (precision, ``fsdp_devices``).
            WeightsError: ``params`` do not fit the config.
        """
        from openpi_backend_torch.training import TorchTrainer

        family = getattr(model_config, "family", type(model_config).__name__)
        if family not in self.families:
            raise InputError(f"the torch backend trains the families {list(self.families)}, not {family!r}")
        return TorchTrainer(model_config, train_config, params, device=device)
