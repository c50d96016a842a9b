"""π0 and π0.5 in PyTorch: prefix and suffix embedding, flow matching, KV-cached sampling.

:class:`Pi0Module` is the ``nn.Module`` (tensors in, tensors out); :class:`Pi0Model`
wraps it behind :class:`openpi_core.models.api.AbstractPi0Model` (numpy in, numpy out).

Shapes: ``B`` batch, ``C`` cameras, ``P`` prefix tokens (``C·patches + L``), ``L``
prompt tokens, ``S`` suffix tokens (π0: state + ``H`` actions; π0.5: ``H`` actions),
``H`` action horizon, ``A`` action dim, ``W`` LLM width, ``We`` action-expert width.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openpi_backend_torch import weights
from openpi_backend_torch.gemma import GemmaMixture, KVCache
from openpi_backend_torch.inputs import ModelInputs, action_chunk, flow_time, observation_inputs
from openpi_backend_torch.precision import exact_float32, pow_float32
from openpi_backend_torch.siglip import SiglipEncoder
from openpi_core.errors import InputError
from openpi_core.models import rtc
from openpi_core.models.api import AbstractPi0Model, check_params, draw_noise, draw_time
from openpi_core.models.config import Pi0Config
from openpi_core.observation import Observation

TIME_MIN_PERIOD = 4e-3
TIME_MAX_PERIOD = 4.0

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def posemb_sincos(time: Tensor, width: int, min_period: float, max_period: float) -> Tensor:
    """Sine-cosine embedding float32 ``[B, width]`` of scalar times ``[B]`` (sines first).

    Periods are geometric from ``min_period`` to ``max_period``. Every value is
    float32 and rounded as the reference rounds it: at t=1 the highest frequency turns
    about 1600 radians, where one ulp of the argument moves the sine by ~1e-4. Hence
    the exponents are ``i * float32(1/(n-1))`` (XLA's linspace multiplies by the
    reciprocal) and the power is correctly rounded.
    """
    half = width // 2
    step = torch.ones((), dtype=torch.float32, device=time.device) / (half - 1)
    fraction = torch.arange(half, dtype=torch.float32, device=time.device) * step
    period = min_period * pow_float32(max_period / min_period, fraction)
    angular = 1.0 / period * 2 * math.pi
    radians = time.to(torch.float32)[:, None] * angular
    return torch.cat([torch.sin(radians), torch.cos(radians)], dim=-1)


def make_attn_mask(valid: Tensor, ar: Tensor) -> Tensor:
    """Block-causal attention mask bool ``[B, N, N]`` from the valid mask bool ``[B, N]``
    and the "starts a new block" flags int ``[N]``: query ``i`` may see key ``j`` when
    both are valid and ``cumsum(ar)[j] <= cumsum(ar)[i]``."""
    blocks = torch.cumsum(ar.to(torch.int64), dim=0)
    causal = blocks[None, :] <= blocks[:, None]
    return causal[None] & valid[:, None, :] & valid[:, :, None]


def positions_from_mask(valid: Tensor) -> Tensor:
    """RoPE positions int ``[B, N]``: padding repeats the previous valid position."""
    return torch.cumsum(valid.to(torch.int64), dim=1) - 1


@dataclasses.dataclass
class PrefixCache:
    """What every denoising step of one :meth:`Pi0Module.sample` call shares.

    Attributes:
        kv: keys/values ``[D, B, K, P + S, h]``; the prefix fills ``[0, P)``.
        mask: bool ``[B, S, P + S]`` the suffix's attention over prefix and suffix.
        positions: int ``[B, S]`` suffix positions, starting after each element's valid prefix.
        state: float32 ``[B, A]`` robot state (π0's state token; unused by π0.5).
    """

    kv: KVCache
    mask: Tensor
    positions: Tensor
    state: Tensor


class Pi0Module(nn.Module):
    """The parameters and the math of π0/π0.5.

    Matmul weights are in ``config.dtype``. Float32 islands, as in the reference:
    norm parameters and arithmetic, the patch embedding and position embedding, the
    time embedding, and the small action/state/time projections.
    """

    def __init__(self, config: Pi0Config) -> None:
        super().__init__()
        self.config = config
        dtype = COMPUTE_DTYPES[config.dtype]
        we, a = config.action_expert.width, config.action_dim
        self.vision = SiglipEncoder(config.vision, config.llm.width, dtype)
        self.gemma = GemmaMixture((config.llm, config.action_expert), (False, config.pi05), config.vocab_size, dtype)
        self.action_in_proj = nn.Linear(a, we)
        self.action_out_proj = nn.Linear(we, a)
        if config.pi05:
            self.time_mlp_in = nn.Linear(we, we)
            self.time_mlp_out = nn.Linear(we, we)
        else:
            self.state_proj = nn.Linear(a, we)
            self.action_time_mlp_in = nn.Linear(2 * we, we)
            self.action_time_mlp_out = nn.Linear(we, we)

    def suffix_layout(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The suffix's valid mask bool ``[B, S]`` (all valid) and AR flags int ``[S]``:
        π0 ``[1, 1, 0, …]`` (state token, then the actions as one block), π0.5 ``[1, 0, …]``."""
        horizon = self.config.action_horizon
        leading = 0 if self.config.pi05 else 1
        ar = torch.zeros(leading + horizon, dtype=torch.int64, device=device)
        ar[: leading + 1] = 1
        return torch.ones(batch, leading + horizon, dtype=torch.bool, device=device), ar

    def embed_prefix(self, inputs: ModelInputs) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix tokens ``[B, P, W]`` (compute dtype), valid mask bool ``[B, P]``, AR flags int ``[P]``.

        All cameras go through SigLIP as one batch; a masked camera is still embedded
        but is invalid for attention and positions."""
        cameras, batch = inputs.image_masks.shape
        image_tokens = self.vision(inputs.images.flatten(0, 1)).unflatten(0, (cameras, batch))
        patches = image_tokens.shape[2]
        image_tokens = image_tokens.transpose(0, 1).flatten(1, 2)
        image_valid = inputs.image_masks.T[:, :, None].expand(batch, cameras, patches).flatten(1)
        tokens = torch.cat([image_tokens, self.gemma.embed(inputs.tokens)], dim=1)
        valid = torch.cat([image_valid, inputs.token_mask], dim=1)
        ar = torch.zeros(tokens.shape[1], dtype=torch.int64, device=tokens.device)
        return tokens, valid, ar

    def embed_suffix(self, state: Tensor, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Suffix tokens float32 ``[B, S, We]``, valid mask ``[B, S]``, AR flags ``[S]``, and
        π0.5's adaRMS conditioning float32 ``[B, We]`` (None for π0).

        π0: a state token, then action tokens that mix the time embedding in with an MLP.
        π0.5: action tokens only; the time MLP's output conditions the expert's norms."""
        horizon = self.config.action_horizon
        action_tokens = self.action_in_proj(x_t)
        time_emb = posemb_sincos(time, action_tokens.shape[-1], TIME_MIN_PERIOD, TIME_MAX_PERIOD)
        if self.config.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))
            tokens = action_tokens
        else:
            cond = None
            time_tokens = time_emb[:, None, :].expand(-1, horizon, -1)
            mixed = self.action_time_mlp_in(torch.cat([action_tokens, time_tokens], dim=-1))
            tokens = torch.cat([self.state_proj(state)[:, None, :], self.action_time_mlp_out(F.silu(mixed))], dim=1)
        return (tokens, *self.suffix_layout(tokens.shape[0], tokens.device), cond)

    def fill_cache(self, prefix_tokens: Tensor, prefix_valid: Tensor, prefix_ar: Tensor, state: Tensor) -> PrefixCache:
        """Run the prefix through the LLM once, into a cache sized for prefix + suffix."""
        batch, prefix_len = prefix_valid.shape
        suffix_valid, suffix_ar = self.suffix_layout(batch, prefix_valid.device)
        suffix_len = suffix_ar.shape[0]
        kv = KVCache.allocate(
            self.config.llm,
            batch,
            prefix_len + suffix_len,
            dtype=self.gemma.embedding.weight.dtype,
            device=prefix_tokens.device,
        )
        self.gemma(
            [prefix_tokens, None],
            positions_from_mask(prefix_valid),
            make_attn_mask(prefix_valid, prefix_ar),
            cache=kv,
        )
        mask = torch.cat(
            [
                prefix_valid[:, None, :].expand(batch, suffix_len, prefix_len),
                make_attn_mask(suffix_valid, suffix_ar),
            ],
            dim=-1,
        )
        positions = prefix_valid.sum(dim=-1, keepdim=True) + positions_from_mask(suffix_valid)
        return PrefixCache(kv=kv, mask=mask, positions=positions, state=state)

    def denoise_step(self, x_t: Tensor, time: Tensor, cache: PrefixCache) -> Tensor:
        """Velocity float32 ``[B, H, A]`` at ``x_t`` ``[B, H, A]``, ``time`` ``[B]``.

        Static shapes throughout: the suffix's keys overwrite the cache's tail and the
        attention reads the whole cache, so this compiles to one graph. While gradients
        are recorded (guided sampling) the cache is only read and the suffix's keys are
        appended to its prefix out of place, which the backward pass needs."""
        tokens, _, _, cond = self.embed_suffix(cache.state, x_t, time)
        prefix_len = cache.mask.shape[-1] - tokens.shape[1]
        _, out = self.gemma(
            [None, tokens],
            cache.positions,
            cache.mask,
            [None, cond],
            cache.kv,
            prefix_len,
            write_cache=not torch.is_grad_enabled(),
        )
        return self.action_out_proj(out[:, -self.config.action_horizon :].float())

    def sample(
        self, inputs: ModelInputs, noise: Tensor, num_steps: int, step: Callable[..., Tensor] | None = None
    ) -> Tensor:
        """Euler-integrate from ``noise`` at t=1 to actions at t=0 in ``num_steps`` steps.

        ``step`` replaces :meth:`denoise_step` (e.g. by a compiled version of it)."""
        step = step or self.denoise_step
        cache = self.fill_cache(*self.embed_prefix(inputs), inputs.state)
        batch = noise.shape[0]
        # Time is carried and decremented in float32, as the reference's loop does.
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
        time = torch.ones((), dtype=torch.float32, device=noise.device)
        x_t = noise
        for _ in range(num_steps):
            x_t = x_t + dt * step(x_t, time.expand(batch), cache)
            time = time + dt
        return x_t

    def sample_guided(
        self,
        inputs: ModelInputs,
        noise: Tensor,
        prefix_actions: Tensor,
        prefix_weights: Tensor,
        step_weights: Tensor,
        step: Callable[..., Tensor] | None = None,
    ) -> Tensor:
        """Real-time chunking's guided sampling (:mod:`openpi_core.models.rtc`) in
        ``N = len(step_weights)`` Euler steps from t=1 to t=0: each step moves along
        ``u - w * g``, where ``u`` is the velocity, ``g`` the vector-Jacobian product of
        the one-jump clean estimate ``x_t - t * u`` with the weighted error
        ``(prefix_actions - clean) * prefix_weights`` (``[B, H, A]``, ``[B, H]``), and
        ``w`` the step's entry of ``step_weights``.

        Call it with gradients disabled: each step records (and frees) its own graph."""
        step = step or self.denoise_step
        cache = self.fill_cache(*self.embed_prefix(inputs), inputs.state)
        batch, num_steps = noise.shape[0], step_weights.shape[0]
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
        time = torch.ones((), dtype=torch.float32, device=noise.device)
        weights = prefix_weights[..., None]
        x_t = noise
        for index in range(num_steps):
            with torch.enable_grad():
                x = x_t.detach().requires_grad_()
                v_t = step(x, time.expand(batch), cache)
                clean = x - time * v_t
                (correction,) = torch.autograd.grad(clean, x, (prefix_actions - clean.detach()) * weights)
            x_t = x_t + dt * (v_t.detach() - step_weights[index] * correction)
            time = time + dt
        return x_t

    def full_velocity(self, inputs: ModelInputs, x_t: Tensor, time: Tensor) -> Tensor:
        """Velocity ``[B, H, A]`` from one joint pass over prefix and suffix (no cache), as in training."""
        prefix_tokens, prefix_valid, prefix_ar = self.embed_prefix(inputs)
        suffix_tokens, suffix_valid, suffix_ar, cond = self.embed_suffix(inputs.state, x_t, time)
        valid = torch.cat([prefix_valid, suffix_valid], dim=1)
        mask = make_attn_mask(valid, torch.cat([prefix_ar, suffix_ar]))
        _, out = self.gemma([prefix_tokens, suffix_tokens], positions_from_mask(valid), mask, [None, cond])
        return self.action_out_proj(out[:, -self.config.action_horizon :].float())

    def loss(self, inputs: ModelInputs, actions: Tensor, noise: Tensor, time: Tensor) -> Tensor:
        """Flow-matching loss float32 ``[B, H]``: noise at t=1, data at t=0, target ``noise - actions``."""
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        v_t = self.full_velocity(inputs, x_t, time)
        return torch.mean(torch.square(v_t - (noise - actions)), dim=-1)


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


class Pi0Model(AbstractPi0Model):
    """A π0/π0.5 :class:`Pi0Module` behind the backend-neutral numpy contract.

    Inference runs under ``torch.inference_mode()`` and :func:`exact_float32`. The
    denoising step can be swapped for a compiled one with :meth:`compile`.
    """

    def __init__(self, config: Pi0Config, module: Pi0Module) -> None:
        self.config = config
        self.module = module.eval()
        self._step: Callable[..., Tensor] = module.denoise_step

    @classmethod
    def from_params(
        cls, config: Pi0Config, params: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
    ) -> "Pi0Model":
        """Build from canonical parameters (names and layouts of
        :func:`~openpi_core.models.pi0_weights.pi0_weight_schema`).

        The module is built on the meta device and the weights are assigned into it, so
        memory holds one copy of the weights (two while ``params`` is alive).

        Raises:
            WeightsError: a parameter is missing, unexpected, mis-shaped or not finite.
        """
        check_params(params)
        with torch.device("meta"):
            module = Pi0Module(config)
        weights.load_into(module, config, params)
        return cls(config, module.to(device))

    @property
    def device(self) -> torch.device:
        return self.module.action_out_proj.weight.device

    def compile(self, **options) -> None:
        """Compile the denoising step with ``torch.compile(fullgraph=True, **options)``."""
        self._step = torch.compile(self.module.denoise_step, fullgraph=True, **options)

    def _inputs(self, observation: Observation) -> ModelInputs:
        return observation_inputs(self.config, observation, self.device)

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
        max_guidance_weight: float = rtc.DEFAULT_MAX_GUIDANCE_WEIGHT,
    ) -> np.ndarray:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps should be a positive integer, got {num_steps!r}")
        if prefix_actions is not None:
            rtc_arguments = (prefix_actions, inference_delay, execution_horizon, max_guidance_weight)
            return self._sample_guided(observation, noise, num_steps, seed, *rtc_arguments)
        # Tensors are made inside inference mode: a compiled step guards on it, and
        # mixing normal and inference tensors across steps would recompile.
        with exact_float32(), torch.inference_mode():
            inputs = self._inputs(observation)
            batch = inputs.state.shape[0]
            if noise is None:
                noise = draw_noise(seed, (batch, self.config.action_horizon, self.config.action_dim))
            noise_t = action_chunk(self.config, "noise", noise, batch, self.device)
            return _numpy(self.module.sample(inputs, noise_t, num_steps, self._step))

    def _sample_guided(
        self,
        observation: Observation,
        noise: np.ndarray | None,
        num_steps: int,
        seed: int,
        prefix_actions: np.ndarray,
        inference_delay: int | np.ndarray | None,
        execution_horizon: int | None,
        max_guidance_weight: float,
    ) -> np.ndarray:
        """:meth:`sample_actions` with a prefix: outside inference mode, since each step
        takes a vector-Jacobian product (its tensors must be able to record a graph)."""
        with exact_float32(), torch.no_grad():
            inputs = self._inputs(observation)
            shape = (inputs.state.shape[0], self.config.action_horizon, self.config.action_dim)
            guidance = rtc.guidance(
                prefix_actions,
                inference_delay,
                execution_horizon,
                max_guidance_weight,
                shape=shape,
                num_steps=num_steps,
            )
            noise = draw_noise(seed, shape) if noise is None else noise
            noise_t = action_chunk(self.config, "noise", noise, shape[0], self.device)

            def tensor(array: np.ndarray) -> Tensor:
                return torch.from_numpy(array).to(self.device)

            actions = self.module.sample_guided(
                inputs,
                noise_t,
                tensor(guidance.prefix_actions),
                tensor(guidance.prefix_weights),
                tensor(guidance.step_weights),
                self._step,
            )
            return _numpy(actions)

    def velocity(self, observation: Observation, x_t: np.ndarray, time: np.ndarray) -> np.ndarray:
        with exact_float32(), torch.inference_mode():
            inputs = self._inputs(observation)
            batch = inputs.state.shape[0]
            x_t_t = action_chunk(self.config, "x_t", x_t, batch, self.device)
            time_t = flow_time(time, batch, self.device)
            cache = self.module.fill_cache(*self.module.embed_prefix(inputs), inputs.state)
            return _numpy(self._step(x_t_t, time_t, cache))

    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with exact_float32(), torch.inference_mode():
            tokens, valid, ar = self.module.embed_prefix(self._inputs(observation))
            return _numpy(tokens), valid.cpu().numpy(), ar.cpu().numpy().astype(bool)

    def _loss_inputs(
        self,
        observation: Observation,
        actions: np.ndarray,
        noise: np.ndarray | None,
        time: np.ndarray | None,
        seed: int,
    ) -> tuple[ModelInputs, Tensor, Tensor, Tensor]:
        inputs = self._inputs(observation)
        batch = inputs.state.shape[0]
        shape = (batch, self.config.action_horizon, self.config.action_dim)
        noise = draw_noise(seed, shape) if noise is None else noise
        time = draw_time(seed, batch) if time is None else time
        return (
            inputs,
            action_chunk(self.config, "actions", actions, batch, self.device),
            action_chunk(self.config, "noise", noise, batch, self.device),
            flow_time(time, batch, self.device),
        )

    def compute_loss(
        self,
        observation: Observation,
        actions: np.ndarray,
        noise: np.ndarray | None = None,
        time: np.ndarray | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        with exact_float32(), torch.inference_mode():
            return _numpy(self.module.loss(*self._loss_inputs(observation, actions, noise, time, seed)))

    def loss_gradients(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        inputs = self._loss_inputs(observation, actions, noise, time, seed=0)
        params = dict(self.module.named_parameters())
        with exact_float32(), torch.enable_grad():
            loss = self.module.loss(*inputs)
            grads = torch.autograd.grad(loss.mean(), list(params.values()), allow_unused=True)
        # Parameters that cannot reach the loss (e.g. the LLM's final norm) have zero gradient.
        by_name = {
            name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads, strict=True)
        }
        return _numpy(loss), weights.canonical_from_module_state(self.config, by_name)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical name -> float32 array. Bit-identical to the loaded weights in float32
        mode; in bfloat16 mode, the bfloat16 weights widened to float32."""
        return weights.canonical_from_module_state(self.config, dict(self.module.named_parameters()))
