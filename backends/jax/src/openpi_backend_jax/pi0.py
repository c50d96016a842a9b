"""π0 and π0.5 in Equinox: prefix/suffix embedding, the flow-matching sampler and loss.

The sequence is a prefix (256 image tokens per camera, then the prompt), read by
the PaliGemma LLM, and a suffix (π0: a state token, then ``H`` action tokens; π0.5:
the action tokens only), read by the action expert. :class:`Pi0` holds the weights
and computes one example; the jitted functions below vmap it over the batch and
:class:`Pi0Model` puts numpy in and out.

Flow matching runs from noise at ``t = 1`` to actions at ``t = 0``:
``x_t = t * noise + (1 - t) * actions``, target velocity ``noise - actions``.

Shapes: ``B`` batch, ``C`` cameras, ``L`` prompt tokens, ``P`` prefix tokens
(``C * 256 + L``), ``H`` action horizon, ``A`` action dim, ``Ts`` suffix tokens,
``W``/``We`` LLM/expert width, ``D`` depth, ``K`` kv heads, ``h`` head dim.
"""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from openpi_backend_jax import weights
from openpi_backend_jax.gemma import Gemma, KVCache, transformer
from openpi_backend_jax.layers import Array, Linear
from openpi_backend_jax.siglip import Siglip
from openpi_core.errors import InputError
from openpi_core.models import rtc
from openpi_core.models.api import AbstractPi0Model, check_cameras, check_params, draw_noise, draw_time
from openpi_core.models.config import Pi0Config
from openpi_core.models.pi0_weights import check_against_schema, pi0_weight_schema
from openpi_core.observation import Observation
from openpi_core.training.config import LoRAConfig

TIME_MIN_PERIOD = 4e-3
TIME_MAX_PERIOD = 4.0


def posemb_sincos(t: Array, width: int) -> Array:
    """Sine-cosine embedding of flow times ``t`` ``[...]`` -> float32 ``[..., width]``.

    Periods are spaced geometrically from 4e-3 to 4; the sine half comes first.
    """
    fraction = jnp.linspace(0.0, 1.0, width // 2, dtype=jnp.float32)
    period = TIME_MIN_PERIOD * (TIME_MAX_PERIOD / TIME_MIN_PERIOD) ** fraction
    angle = jnp.asarray(t, jnp.float32)[..., None] * (1.0 / period * 2 * jnp.pi)
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def attention_mask(valid: Array, starts_block: Array) -> Array:
    """Block-causal mask ``[T, T]`` from valid flags ``[T]`` and "starts a new block"
    flags ``[T]``: token i sees token j when both are valid and j's block (the
    cumulative count of flags) is not after i's."""
    block = jnp.cumsum(starts_block, axis=-1)
    return (block[None, :] <= block[:, None]) & valid[None, :] & valid[:, None]


def positions(valid: Array, offset: Array | int = 0) -> Array:
    """RoPE positions ``[..., T]``: invalid tokens repeat the previous position."""
    return offset + jnp.cumsum(valid, axis=-1) - 1


class Inputs(eqx.Module):
    """An :class:`~openpi_core.observation.Observation` as JAX arrays (leading ``B``).

    Attributes:
        images: float32 ``[B, C, H, W, 3]`` in ``[-1, 1]``, cameras in ``config.image_keys`` order.
        image_masks: bool ``[B, C]``.
        state: float32 ``[B, S]``.
        tokens: int32 ``[B, L]`` or None.
        token_mask: bool ``[B, L]`` or None.
    """

    images: Array
    image_masks: Array
    state: Array
    tokens: Array | None
    token_mask: Array | None


class Pi0(eqx.Module):
    """π0 (``pi05=False``) or π0.5 weights, and the computation for one example.

    Attribute names follow the canonical parameter names. Fields that one variant
    lacks are None: ``state_proj`` and ``action_time_mlp_*`` (π0 only, the time
    embedding is mixed into the action tokens), ``time_mlp_*`` (π0.5 only, the time
    embedding conditions the expert's adaptive norms).
    """

    vision: Siglip
    llm: Gemma
    expert: Gemma
    action_in_proj: Linear
    action_out_proj: Linear
    state_proj: Linear | None
    action_time_mlp_in: Linear | None
    action_time_mlp_out: Linear | None
    time_mlp_in: Linear | None
    time_mlp_out: Linear | None
    pi05: bool = eqx.field(static=True)
    action_horizon: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(self, config: Pi0Config, *, key: Array, lora: Mapping[str, LoRAConfig] | None = None):
        """``lora`` maps an expert (``llm``, ``expert``) to the adapters it gets
        (:func:`openpi_core.training.lora.adapters`); none by default."""
        keys = iter(jax.random.split(key, 9))
        lora = lora or {}
        we, a = config.action_expert.width, config.action_dim
        self.vision = Siglip(config.vision, config.llm.width, key=next(keys))
        self.llm = Gemma(config.llm, vocab_size=config.vocab_size, lora=lora.get("llm"), key=next(keys))
        self.expert = Gemma(config.action_expert, adaptive_norms=config.pi05, lora=lora.get("expert"), key=next(keys))
        self.action_in_proj = Linear(a, we, key=next(keys))
        self.action_out_proj = Linear(we, a, key=next(keys))
        pi0_only = not config.pi05
        self.state_proj = Linear(a, we, key=next(keys)) if pi0_only else None
        self.action_time_mlp_in = Linear(2 * we, we, key=next(keys)) if pi0_only else None
        self.action_time_mlp_out = Linear(we, we, key=next(keys)) if pi0_only else None
        self.time_mlp_in = Linear(we, we, key=next(keys)) if config.pi05 else None
        self.time_mlp_out = Linear(we, we, key=next(keys)) if config.pi05 else None
        self.pi05 = config.pi05
        self.action_horizon = config.action_horizon
        self.dtype = config.dtype

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def embed_prefix(self, inputs: Inputs) -> tuple[Array, Array]:
        """One example's prefix: tokens ``[P, W]`` in the compute dtype and valid flags ``[P]``.

        No prefix token starts a block (:meth:`prefix_ar`): the prefix attends
        bidirectionally.
        """
        image_tokens = jax.vmap(lambda image: self.vision(image, self.compute_dtype))(inputs.images)
        cameras, per_camera, width = image_tokens.shape
        tokens = [image_tokens.reshape(cameras * per_camera, width)]
        valid = [jnp.repeat(inputs.image_masks, per_camera)]
        if inputs.tokens is not None:
            tokens.append(self.llm.embed(inputs.tokens).astype(self.compute_dtype))
            valid.append(inputs.token_mask)
        return jnp.concatenate(tokens), jnp.concatenate(valid)

    @staticmethod
    def prefix_ar(length: int) -> np.ndarray:
        """The prefix's block-start flags ``[P]``: all False, one bidirectional block."""
        return np.zeros(length, dtype=bool)

    def suffix_ar(self) -> np.ndarray:
        """The suffix's block-start flags ``[Ts]``: π0's state token and the first
        action token each open a block, so nothing before them sees them and the
        state token does not see the actions."""
        flags = [True] + [False] * (self.action_horizon - 1)
        return np.array(flags if self.pi05 else [True, *flags])

    def embed_suffix(self, state: Array, x_t: Array, time: Array) -> tuple[Array, Array | None]:
        """One example's suffix tokens ``[Ts, We]`` and π0.5's adaRMS condition ``[We]``
        (None for π0), from ``state`` ``[S]``, noisy actions ``x_t`` ``[H, A]`` and
        ``time`` ``[]``.

        Computed in float32 (a float32 island: the time embedding needs it, and
        these projections are tiny); the transformer casts the tokens down.
        """
        x_t = x_t.astype(jnp.float32)
        action_tokens = self.action_in_proj(x_t)
        time_emb = posemb_sincos(time, action_tokens.shape[-1])
        if self.pi05:
            cond = jax.nn.swish(self.time_mlp_out(jax.nn.swish(self.time_mlp_in(time_emb))))
            return action_tokens, cond
        time_tokens = jnp.broadcast_to(time_emb, action_tokens.shape)
        mixed = self.action_time_mlp_in(jnp.concatenate([action_tokens, time_tokens], axis=-1))
        action_tokens = self.action_time_mlp_out(jax.nn.swish(mixed))
        state_token = self.state_proj(state.astype(jnp.float32))[None]
        return jnp.concatenate([state_token, action_tokens]), None

    def prefill(self, prefix: Array, valid: Array) -> KVCache:
        """Run the prefix ``[P, W]`` (valid ``[P]``) through the LLM; returns the KV cache."""
        mask = attention_mask(valid, self.prefix_ar(valid.shape[0]))
        _, kv_cache = transformer((self.llm, self.expert), [prefix, None], [None, None], positions(valid), mask)
        return kv_cache

    def velocity(self, kv_cache: KVCache, prefix_valid: Array, state: Array, x_t: Array, time: Array) -> Array:
        """Predicted velocity float32 ``[H, A]`` at ``x_t`` ``[H, A]``, ``time`` ``[]``,
        attending to the cached prefix."""
        suffix, cond = self.embed_suffix(state, x_t, time)
        suffix_valid = jnp.ones(suffix.shape[0], dtype=bool)
        mask = jnp.concatenate(
            [
                jnp.broadcast_to(prefix_valid, (suffix.shape[0], prefix_valid.shape[0])),
                attention_mask(suffix_valid, self.suffix_ar()),
            ],
            axis=-1,
        )
        pos = positions(suffix_valid, offset=jnp.sum(prefix_valid))
        (_, out), _ = transformer(
            (self.llm, self.expert), [None, suffix.astype(self.compute_dtype)], [None, cond], pos, mask, kv_cache
        )
        return self.action_head(out)

    def action_head(self, expert_out: Array) -> Array:
        """Expert outputs ``[Ts, We]`` -> velocity float32 ``[H, A]`` (from the last ``H`` tokens)."""
        return self.action_out_proj(expert_out[-self.action_horizon :].astype(jnp.float32))

    def loss(self, inputs: Inputs, actions: Array, noise: Array, time: Array) -> Array:
        """One example's flow-matching loss ``[H]``: prefix and suffix in one joint pass."""
        x_t = time * noise + (1 - time) * actions
        target = noise - actions
        prefix, prefix_valid = self.embed_prefix(inputs)
        suffix, cond = self.embed_suffix(inputs.state, x_t, time)
        valid = jnp.concatenate([prefix_valid, jnp.ones(suffix.shape[0], dtype=bool)])
        ar = np.concatenate([self.prefix_ar(prefix.shape[0]), self.suffix_ar()])
        (_, out), _ = transformer(
            (self.llm, self.expert),
            [prefix, suffix.astype(self.compute_dtype)],
            [None, cond],
            positions(valid),
            attention_mask(valid, ar),
        )
        return jnp.mean(jnp.square(self.action_head(out) - target), axis=-1)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def sample_actions(model: Pi0, inputs: Inputs, noise: Array, num_steps: Array) -> Array:
    """Euler-integrate from ``noise`` ``[B, H, A]`` at t=1 to actions at t=0 in
    ``num_steps`` (a traced int: every step count shares one compilation) steps;
    the prefix runs once into a KV cache.

    Like every jitted entry point here, it counts its traces
    (``eqx.debug.get_num_traces``) so tests can assert it compiles once per shape."""
    prefix, prefix_valid = jax.vmap(model.embed_prefix)(inputs)
    kv_cache = jax.vmap(model.prefill)(prefix, prefix_valid)
    velocity = jax.vmap(model.velocity, in_axes=(0, 0, 0, 0, None))
    dt = -1.0 / num_steps.astype(jnp.float32)

    def step(_: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        x_t, time = carry
        return x_t + dt * velocity(kv_cache, prefix_valid, inputs.state, x_t, time), time + dt

    actions, _ = lax.fori_loop(0, num_steps, step, (noise.astype(jnp.float32), jnp.float32(1.0)))
    return actions


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def sample_actions_guided(
    model: Pi0, inputs: Inputs, noise: Array, prefix_actions: Array, prefix_weights: Array, step_weights: Array
) -> Array:
    """Real-time chunking's guided sampling (:mod:`openpi_core.models.rtc`): each Euler
    step from t=1 to t=0 moves along ``u - w * g``, where ``u`` is the velocity, ``g`` the
    vector-Jacobian product of the one-jump clean estimate ``x_t - t * u`` with the
    weighted error ``(prefix_actions - clean) * prefix_weights``, and ``w`` the step's
    guidance weight.

    ``prefix_actions`` ``[B, H, A]``, ``prefix_weights`` ``[B, H]`` and ``step_weights``
    ``[N]`` are arrays, so new delays or prefixes reuse the compilation; the number of
    steps is ``N``, so each step count compiles once."""
    prefix, prefix_valid = jax.vmap(model.embed_prefix)(inputs)
    kv_cache = jax.vmap(model.prefill)(prefix, prefix_valid)
    velocity = jax.vmap(model.velocity, in_axes=(0, 0, 0, 0, None))
    num_steps = step_weights.shape[0]
    dt = -1.0 / jnp.float32(num_steps)

    def step(index: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        x_t, time = carry

        def clean_estimate(x_t: Array) -> tuple[Array, Array]:
            v_t = velocity(kv_cache, prefix_valid, inputs.state, x_t, time)
            return x_t - time * v_t, v_t

        clean, pullback, v_t = jax.vjp(clean_estimate, x_t, has_aux=True)
        (correction,) = pullback((prefix_actions - clean) * prefix_weights[..., None])
        return x_t + dt * (v_t - step_weights[index] * correction), time + dt

    actions, _ = lax.fori_loop(0, num_steps, step, (noise.astype(jnp.float32), jnp.float32(1.0)))
    return actions


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def velocity(model: Pi0, inputs: Inputs, x_t: Array, time: Array) -> Array:
    """Velocity ``[B, H, A]`` at ``x_t`` ``[B, H, A]`` and ``time`` ``[B]``, through the KV cache."""
    prefix, prefix_valid = jax.vmap(model.embed_prefix)(inputs)
    kv_cache = jax.vmap(model.prefill)(prefix, prefix_valid)
    return jax.vmap(model.velocity)(kv_cache, prefix_valid, inputs.state, x_t, time)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def embed_prefix(model: Pi0, inputs: Inputs) -> tuple[Array, Array]:
    """Prefix tokens ``[B, P, W]`` and valid flags ``[B, P]``."""
    return jax.vmap(model.embed_prefix)(inputs)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def embed_suffix(model: Pi0, state: Array, x_t: Array, time: Array) -> tuple[Array, Array | None]:
    """Suffix tokens ``[B, Ts, We]`` and π0.5's adaRMS condition ``[B, We]`` (None for π0)."""
    return jax.vmap(model.embed_suffix)(state, x_t, time)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def compute_loss(model: Pi0, inputs: Inputs, actions: Array, noise: Array, time: Array) -> Array:
    """Loss ``[B, H]``."""
    return jax.vmap(model.loss)(inputs, actions, noise, time)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def loss_and_gradients(model: Pi0, inputs: Inputs, actions: Array, noise: Array, time: Array) -> tuple[Array, Pi0]:
    """Loss ``[B, H]`` and the gradient of its mean, as a :class:`Pi0` tree."""

    def mean_loss(model: Pi0) -> tuple[Array, Array]:
        loss = jax.vmap(model.loss)(inputs, actions, noise, time)
        return jnp.mean(loss), loss

    (_, loss), grads = eqx.filter_value_and_grad(mean_loss, has_aux=True)(model)
    return loss, grads


class Pi0Model(AbstractPi0Model):
    """A π0/π0.5 model in JAX behind the backend-neutral numpy interface.

    Build it with :meth:`from_params`. Weights live in ``config.dtype``; with
    ``bfloat16`` the matmuls run in bfloat16 while norms, attention softmax, the
    time embedding and the suffix projections stay in float32.
    """

    def __init__(self, config: Pi0Config, module: Pi0):
        self.config = config
        self.module = module

    @classmethod
    def from_params(cls, config: Pi0Config, params: Mapping[str, np.ndarray]) -> "Pi0Model":
        """Build from canonical parameters (:func:`~openpi_core.models.pi0_weights.pi0_weight_schema`).

        Raises:
            WeightsError: names or shapes differ from the schema, or a value is not finite.
        """
        schema = pi0_weight_schema(config)
        params = check_against_schema(params, schema)
        check_params(params)
        skeleton = eqx.filter_eval_shape(Pi0, config, key=jax.random.key(0))
        return cls(config, weights.fill(skeleton, params, jnp.dtype(config.dtype)))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical name -> numpy array in ``config.dtype``, exactly as loaded in that dtype."""
        return weights.export(self.module, pi0_weight_schema(self.config))

    def inputs(self, observation: Observation) -> Inputs:
        """Check ``observation`` against the config and convert it.

        Raises:
            InputError: a camera of ``config.image_keys`` is missing, an image is not
                ``[B, *image_size, 3]``, or (π0) the state is not ``[B, action_dim]``.
        """
        config, batch = self.config, observation.batch_size
        check_cameras(config, observation)
        if not config.pi05 and observation.state.shape != (batch, config.action_dim):
            raise InputError(
                f"Observation.state should have shape {[batch, config.action_dim]} (padded to the action dim), "
                f"got {list(observation.state.shape)}"
            )
        tokens, mask = observation.tokenized_prompt, observation.tokenized_prompt_mask
        return Inputs(
            images=jnp.asarray(np.stack([observation.images[key] for key in config.image_keys], axis=1)),
            image_masks=jnp.asarray(np.stack([observation.image_masks[key] for key in config.image_keys], axis=1)),
            state=jnp.asarray(observation.state),
            tokens=None if tokens is None else jnp.asarray(tokens),
            token_mask=None if mask is None else jnp.asarray(mask),
        )

    def _chunk(self, name: str, value: np.ndarray, batch: int) -> Array:
        expected = (batch, self.config.action_horizon, self.config.action_dim)
        if np.shape(value) != expected:
            raise InputError(f"{name} should have shape {list(expected)}, got {list(np.shape(value))}")
        return jnp.asarray(value, jnp.float32)

    def _times(self, value: np.ndarray, batch: int) -> Array:
        if np.shape(value) != (batch,):
            raise InputError(f"time should have shape {[batch]}, got {list(np.shape(value))}")
        return jnp.asarray(value, jnp.float32)

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
        if num_steps < 1:
            raise InputError(f"num_steps should be at least 1, got {num_steps}")
        batch = observation.batch_size
        shape = (batch, self.config.action_horizon, self.config.action_dim)
        guidance = rtc.guidance(
            prefix_actions, inference_delay, execution_horizon, max_guidance_weight, shape=shape, num_steps=num_steps
        )
        if noise is None:
            noise = draw_noise(seed, shape)
        noise = self._chunk("noise", noise, batch)
        if guidance is None:
            actions = sample_actions(self.module, self.inputs(observation), noise, jnp.asarray(num_steps, jnp.int32))
        else:
            actions = sample_actions_guided(
                self.module,
                self.inputs(observation),
                noise,
                jnp.asarray(guidance.prefix_actions),
                jnp.asarray(guidance.prefix_weights),
                jnp.asarray(guidance.step_weights),
            )
        return np.asarray(actions, dtype=np.float32)

    def velocity(self, observation: Observation, x_t: np.ndarray, time: np.ndarray) -> np.ndarray:
        batch = observation.batch_size
        v = velocity(self.module, self.inputs(observation), self._chunk("x_t", x_t, batch), self._times(time, batch))
        return np.asarray(v, dtype=np.float32)

    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, valid = embed_prefix(self.module, self.inputs(observation))
        return np.asarray(tokens, np.float32), np.asarray(valid), Pi0.prefix_ar(tokens.shape[1])

    def embed_suffix(
        self, observation: Observation, x_t: np.ndarray, time: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Suffix tokens ``[B, Ts, We]`` (float32), valid flags ``[B, Ts]``, block-start
        flags ``[Ts]`` and π0.5's adaRMS condition ``[B, We]`` (None for π0)."""
        batch = observation.batch_size
        state = self.inputs(observation).state
        tokens, cond = embed_suffix(self.module, state, self._chunk("x_t", x_t, batch), self._times(time, batch))
        valid = np.ones(tokens.shape[:2], dtype=bool)
        return np.asarray(tokens), valid, self.module.suffix_ar(), None if cond is None else np.asarray(cond)

    def _loss_args(
        self,
        observation: Observation,
        actions: np.ndarray,
        noise: np.ndarray | None,
        time: np.ndarray | None,
        seed: int,
    ) -> tuple[Inputs, Array, Array, Array]:
        batch = observation.batch_size
        if noise is None:
            noise = draw_noise(seed, (batch, self.config.action_horizon, self.config.action_dim))
        if time is None:
            time = draw_time(seed, batch)
        return (
            self.inputs(observation),
            self._chunk("actions", actions, batch),
            self._chunk("noise", noise, batch),
            self._times(time, batch),
        )

    def compute_loss(
        self,
        observation: Observation,
        actions: np.ndarray,
        noise: np.ndarray | None = None,
        time: np.ndarray | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        loss = compute_loss(self.module, *self._loss_args(observation, actions, noise, time, seed))
        return np.asarray(loss, dtype=np.float32)

    def loss_gradients(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_gradients(self.module, *self._loss_args(observation, actions, noise, time, 0))
        names = pi0_weight_schema(self.config)
        return np.asarray(loss, dtype=np.float32), weights.export(grads, names, dtype=np.float32)
