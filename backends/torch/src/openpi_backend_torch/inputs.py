"""The numpy -> torch boundary: validate what callers pass and convert it once.

Every check raises :class:`~openpi_core.errors.InputError` naming the field, the
expected and the actual value, before anything reaches a torch kernel.
"""

import dataclasses

import numpy as np
import torch
from torch import Tensor

from openpi_core.errors import InputError
from openpi_core.models.api import check_cameras
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.observation import Observation


@dataclasses.dataclass
class ModelInputs:
    """An :class:`Observation` as tensors on the model's device.

    Attributes:
        images: float32 ``[C, B, H, W, 3]``, cameras in ``config.image_keys`` order.
        image_masks: bool ``[C, B]``.
        state: float32 ``[B, S]``.
        tokens: int64 ``[B, L]`` prompt ids (``L`` may be 0).
        token_mask: bool ``[B, L]``.
    """

    images: Tensor
    image_masks: Tensor
    state: Tensor
    tokens: Tensor
    token_mask: Tensor


def observation_inputs(
    config: Pi0Config | Pi0FASTConfig, observation: Observation, device: torch.device
) -> ModelInputs:
    """Check ``observation`` against ``config`` and convert it.

    Raises:
        InputError: a camera of ``config.image_keys`` is missing (others are ignored,
            as in openpi) or not ``[B, *image_size, 3]``, π0's state is not ``[B, action_dim]``, or a prompt
            token id is outside the vocabulary.
    """
    if not isinstance(observation, Observation):
        raise InputError(f"expected an openpi_core Observation, got {type(observation).__name__}")
    check_cameras(config, observation)
    batch = observation.batch_size
    if isinstance(config, Pi0Config) and not config.pi05 and observation.state.shape[1] != config.action_dim:
        raise InputError(
            f"Observation.state should be [B, {config.action_dim}] (padded to the action dim), "
            f"got {list(observation.state.shape)}"
        )
    if observation.tokenized_prompt is None:
        tokens = np.zeros((batch, 0), dtype=np.int64)
        token_mask = np.zeros((batch, 0), dtype=bool)
    else:
        tokens, token_mask = observation.tokenized_prompt, observation.tokenized_prompt_mask
        if tokens.size and (tokens.min() < 0 or tokens.max() >= config.vocab_size):
            raise InputError(
                f"Observation.tokenized_prompt ids should lie in [0, {config.vocab_size}), "
                f"got values in [{tokens.min()}, {tokens.max()}]"
            )

    def tensor(array: np.ndarray, dtype: torch.dtype) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)

    return ModelInputs(
        images=tensor(np.stack([observation.images[key] for key in config.image_keys]), torch.float32),
        image_masks=tensor(np.stack([observation.image_masks[key] for key in config.image_keys]), torch.bool),
        state=tensor(observation.state, torch.float32),
        tokens=tensor(tokens, torch.int64),
        token_mask=tensor(token_mask, torch.bool),
    )


def action_chunk(config: Pi0Config, name: str, array: np.ndarray, batch: int, device: torch.device) -> Tensor:
    """A float32 ``[B, H, A]`` array (actions or noise) as a tensor.

    Raises:
        InputError: ``array`` has another shape.
    """
    array = np.asarray(array, dtype=np.float32)
    expected = (batch, config.action_horizon, config.action_dim)
    if array.shape != expected:
        raise InputError(
            f"{name} should have shape {list(expected)} (batch, horizon, action dim), got {list(array.shape)}"
        )
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def flow_time(array: np.ndarray, batch: int, device: torch.device) -> Tensor:
    """Flow-matching times float32 ``[B]`` as a tensor.

    Raises:
        InputError: ``array`` is not ``[B]``.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.shape != (batch,):
        raise InputError(f"time should have shape [{batch}], got {list(array.shape)}")
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)
