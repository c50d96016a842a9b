"""The contract every backend's π0/π0.5 model fulfils, stated once.

Inputs and outputs are numpy arrays; each backend converts at this boundary.
Noise and flow-matching times that the caller does not pass are drawn here, in
numpy, from ``seed`` (:func:`draw_noise`, :func:`draw_time`), so the same seed gives
the same numbers in every backend.
"""

import abc
from collections.abc import Mapping

import numpy as np

from openpi_core.errors import InputError, WeightsError
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.models.rtc import DEFAULT_MAX_GUIDANCE_WEIGHT
from openpi_core.observation import Observation

BETA_A, BETA_B = 1.5, 1.0
"""Training times are Beta(1.5, 1) scaled into ``[TIME_MIN, 1]``."""
TIME_MIN = 0.001


def draw_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of ``shape`` from ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def draw_time(seed: int, batch_size: int) -> np.ndarray:
    """Flow-matching times ``[B]`` in ``[0.001, 1]``, from ``seed``.

    Uses a generator stream separate from :func:`draw_noise` of the same seed.
    """
    rng = np.random.default_rng([seed, 1])
    return (rng.beta(BETA_A, BETA_B, size=batch_size) * (1.0 - TIME_MIN) + TIME_MIN).astype(np.float32)


class AbstractPi0Model(abc.ABC):
    """A π0 or π0.5 model with its weights, in one backend.

    Shapes: ``B`` batch, ``H`` action horizon, ``A`` action dim, ``P`` prefix length
    (256 tokens per camera, then the prompt), ``W`` LLM width.
    """

    config: Pi0Config

    @abc.abstractmethod
    def sample_actions(
        self,
        observation: Observation,
        noise: np.ndarray | None = None,
        num_steps: int = 10,
        seed: int = 0,
        *,
        prefix_actions: np.ndarray | None = None,
        inference_delay: int | np.ndarray | None = None,
        execution_horizon: int | None = None,
        max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT,
    ) -> np.ndarray:
        """Integrate the flow from noise at t=1 to actions at t=0 in ``num_steps`` Euler
        steps; the prefix runs once into a KV cache. Returns float32 ``[B, H, A]``.
        ``noise`` (``[B, H, A]``) defaults to :func:`draw_noise` of ``seed``.

        With ``prefix_actions`` the sampling is real-time chunking's guided inpainting
        (:mod:`openpi_core.models.rtc`, which states the paper's time convention in
        ours): every step pulls the chunk towards ``prefix_actions`` (``[B, H, A]``, the
        previous chunk in model space, aligned to this chunk's steps) under the soft mask
        of ``inference_delay`` (``d``, an int or ints ``[B]``: steps that run from the
        previous chunk before this one can start) and ``execution_horizon`` (``s``: the
        mask ends at step ``H - s``), with the guidance weight clipped at
        ``max_guidance_weight``. Both ``d`` and ``s`` are then required. Without
        ``prefix_actions`` the sampler is the plain one and the other three are unused.

        Raises:
            InputError: an argument does not fit (see :func:`openpi_core.models.rtc.guidance`).
        """

    @abc.abstractmethod
    def compute_loss(
        self,
        observation: Observation,
        actions: np.ndarray,
        noise: np.ndarray | None = None,
        time: np.ndarray | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Flow-matching loss: squared error between predicted and true velocity
        ``noise - actions`` at ``x_t = t*noise + (1-t)*actions``, averaged over the
        action dim. Returns float32 ``[B, H]``."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical parameter name -> numpy array (see :mod:`openpi_core.models.pi0_weights`)."""

    @abc.abstractmethod
    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prefix tokens ``[B, P, W]`` (image tokens per camera in ``config.image_keys``
        order, then prompt embeddings scaled by sqrt(W)), the valid mask ``[B, P]`` and
        the autoregressive flags ``[P]``."""

    @abc.abstractmethod
    def velocity(self, observation: Observation, x_t: np.ndarray, time: np.ndarray) -> np.ndarray:
        """The predicted velocity ``[B, H, A]`` at ``x_t`` ``[B, H, A]`` and ``time``
        ``[B]``, computed as inside :meth:`sample_actions` (prefix in a KV cache)."""

    @abc.abstractmethod
    def loss_gradients(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The loss ``[B, H]`` and the gradient of its mean with respect to every
        parameter, by canonical name (float32)."""


def check_params(params: Mapping[str, np.ndarray]) -> None:
    """Reject non-finite weights early with the offending name."""
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"parameter {name!r} holds NaN or inf")


class AbstractPi0FASTModel(abc.ABC):
    """A π0-FAST model with its weights, in one backend.

    The observation carries the prompt built by the FAST tokenizer
    (:mod:`openpi_core.fast`): ``tokenized_prompt`` / ``tokenized_prompt_mask``, and for
    training ``token_ar_mask`` / ``token_loss_mask``. Shapes: ``B`` batch, ``L`` prompt
    length, ``S`` decoding steps, ``V`` vocabulary, ``W`` width.
    """

    config: Pi0FASTConfig

    @abc.abstractmethod
    def sample_actions(
        self,
        observation: Observation,
        noise: np.ndarray | None = None,
        num_steps: int | None = None,
        seed: int = 0,
        *,
        temperature: float = 0.0,
    ) -> np.ndarray:
        """Decode action tokens with a KV cache: greedy at ``temperature`` 0, otherwise
        sampled from ``softmax(logits / temperature)`` with ``seed``. Decodes at most
        ``num_steps`` tokens (default ``config.max_decoding_steps``) and stops a row at
        ``config.eos_token``; stops early only when every row has stopped. Returns int32
        token ids ``[B, S]``, zero after a row's end. ``noise`` is unused (accepted so
        all families share one call); the model transforms' output stage turns the
        tokens into actions."""

    @abc.abstractmethod
    def decode(
        self, observation: Observation, num_steps: int, temperature: float = 0.0, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`sample_actions` but also returns the logits that chose each
        token: tokens int32 ``[B, S]`` and logits float32 ``[B, S, V]`` (step 0 is the
        last prefill logit). Rows after an all-batch stop are absent (``S`` shrinks)."""

    @abc.abstractmethod
    def compute_loss(self, observation: Observation, actions: np.ndarray | None = None) -> np.ndarray:
        """Mean next-token negative log-likelihood over ``token_loss_mask`` (shifted by
        one), per example: float32 ``[B]``. ``actions`` is unused (they are already in
        the tokens)."""

    @abc.abstractmethod
    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Input embeddings ``[B, P, W]`` (image tokens per camera, then prompt tokens
        scaled by sqrt(W)), the valid mask ``[B, P]`` and the AR flags ``[B, P]``."""

    @abc.abstractmethod
    def prefix_logits(self, observation: Observation) -> np.ndarray:
        """Logits ``[B, P, V]`` of one full pass over the prefix with training positions
        ``0..P-1`` and the prefix-LM mask (as in :meth:`compute_loss`)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical parameter name -> numpy array (see ``pi0_fast_weight_schema``)."""

    @abc.abstractmethod
    def loss_gradients(self, observation: Observation) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The loss ``[B]`` and the gradient of its mean with respect to every parameter."""


def check_cameras(config: Pi0Config | Pi0FASTConfig, observation: Observation) -> None:
    """Raise :class:`InputError` unless every camera of ``config.image_keys`` is there as
    ``[B, *image_size, 3]`` (other cameras are ignored, as in openpi)."""
    batch = observation.batch_size
    missing = [key for key in config.image_keys if key not in observation.images]
    if missing:
        raise InputError(
            f"Observation.images should hold cameras {list(config.image_keys)}; "
            f"missing {missing}, got {sorted(observation.images)}"
        )
    expected = (batch, *config.vision.image_size, 3)
    for key in config.image_keys:
        if observation.images[key].shape != expected:
            raise InputError(
                f"Observation.images[{key!r}] should have shape {list(expected)} (resize before the model), "
                f"got {list(observation.images[key].shape)}"
            )
