"""PyTorch backend of the π-family policies: π0 and π0.5 with parity to openpi.

Modules: :mod:`.gemma` (the two-expert Gemma mixture and its KV cache),
:mod:`.siglip` (the vision tower), :mod:`.pi0` (the model, sampling and loss),
:mod:`.weights` (canonical parameters <-> module parameters), :mod:`.inputs`
(numpy -> torch with input checks), :mod:`.precision` (exact float32),
:mod:`.backend` and :mod:`.plugin` (registration). This package imports torch
only from the modules that compute, so importing it here stays cheap.
"""

from openpi_backend_torch.backend import TorchBackend

__all__ = ["TorchBackend"]
