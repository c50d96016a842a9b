"""π0-FAST in Equinox: one Gemma reading a SigLIP + prompt prefix and decoding FAST
action tokens autoregressively.

The sequence is 256 image tokens per camera, then the prompt built by the FAST
tokenizer (text, binned state and, in training, the action tokens). Attention is
prefix-LM: every token with AR flag 0 is in the first, bidirectional block; each flag
1 opens a new block, so the action tokens are causal. The single Gemma reuses
:mod:`openpi_backend_jax.gemma` (:func:`~openpi_backend_jax.gemma.transformer` with
one expert) and its token embedding doubles as the output projection.

Training (:meth:`Pi0FAST.loss`) runs the whole sequence once at positions ``0..N-1``
and scores next-token predictions on ``token_loss_mask`` shifted by one. Decoding
(:func:`generate`) follows openpi's sampler:

* the prefix is right-aligned (rolled so its last valid token is last), then
  prefilled at positions ``cumsum(valid) - 1`` into a KV cache of static size
  ``P + buffer``;
* generated token ``s`` is fed at position ``prefill_len + s + offset`` (openpi's
  offset is 1: position ``prefill_len`` is never used; see
  ``Pi0FASTConfig.decode_position_offset``) and attends to the cache window
  ``[P - prefill_len, P + s]``, itself included. As in openpi, that window is the
  valid prefix only while the valid tokens are contiguous after right-alignment: a
  masked camera between valid ones shifts it (it then covers the masked camera's
  tokens and misses as many valid ones);
* a row stops after it emits ``eos_token`` (its later tokens are 0); the loop, one
  ``lax.while_loop`` inside one jit, exits once every row stopped or after
  ``num_steps`` tokens. ``num_steps``, the temperature and the seed are traced, so
  one compilation serves them all for a given input shape.

Shapes: ``B`` batch, ``C`` cameras, ``L`` prompt tokens, ``P`` prefix tokens
(``C * 256 + L``), ``W`` width, ``V`` vocabulary, ``D`` depth, ``K`` kv heads,
``h`` head dim, ``S`` decoding steps.
"""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from openpi_backend_jax import weights
from openpi_backend_jax.gemma import Gemma, KVCache, transformer
from openpi_backend_jax.layers import Array, einsum
from openpi_backend_jax.pi0 import attention_mask, positions
from openpi_backend_jax.siglip import Siglip
from openpi_core.errors import InputError
from openpi_core.models.api import AbstractPi0FASTModel, check_cameras, check_params
from openpi_core.models.config import Pi0FASTConfig
from openpi_core.models.pi0_weights import check_against_schema, pi0_fast_weight_schema
from openpi_core.observation import Observation
from openpi_core.training.config import LoRAConfig


class FASTInputs(eqx.Module):
    """An :class:`~openpi_core.observation.Observation` as JAX arrays (leading ``B``).

    Attributes:
        images: float32 ``[B, C, H, W, 3]`` in ``[-1, 1]``, cameras in ``config.image_keys`` order.
        image_masks: bool ``[B, C]``.
        tokens: int32 ``[B, L]``.
        token_mask: bool ``[B, L]``.
        ar_mask: int32 ``[B, L]`` (zeros when the observation has none: a bidirectional prompt).
        loss_mask: bool ``[B, L]`` or None (only training needs it).
    """

    images: Array
    image_masks: Array
    tokens: Array
    token_mask: Array
    ar_mask: Array
    loss_mask: Array | None


def decode_positions(prefill_len: Array, step: Array, offset: int) -> Array:
    """The RoPE position of generated token ``step``: ``prefill_len + step + offset``
    (openpi's offset 1 skips position ``prefill_len``)."""
    return prefill_len + step + offset


def right_align(x: Array, valid: Array, mask: Array) -> tuple[Array, Array, Array]:
    """Roll one example's prefix so its last valid token ends the sequence: tokens
    ``[P, W]``, valid ``[P]`` and attention mask ``[P, P]`` (rolled on both axes,
    as openpi does, rather than rebuilt)."""
    shift = jnp.max(valid * jnp.arange(valid.shape[0])) + 1
    return jnp.roll(x, -shift, axis=0), jnp.roll(valid, -shift), jnp.roll(mask, -shift, axis=(0, 1))


class Pi0FAST(eqx.Module):
    """π0-FAST weights (``vision``, ``llm``; names as the canonical parameters) and the
    computation for one example."""

    vision: Siglip
    llm: Gemma
    dtype: str = eqx.field(static=True)
    decode_position_offset: int = eqx.field(static=True)

    def __init__(self, config: Pi0FASTConfig, *, key: Array, lora: Mapping[str, LoRAConfig] | None = None):
        """``lora`` maps ``llm`` to the adapters it gets; none by default."""
        kv, kl = jax.random.split(key)
        self.vision = Siglip(config.vision, config.llm.width, key=kv)
        self.llm = Gemma(config.llm, vocab_size=config.vocab_size, lora=(lora or {}).get("llm"), key=kl)
        self.dtype = config.dtype
        self.decode_position_offset = config.decode_position_offset

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def embed_inputs(self, inputs: FASTInputs) -> tuple[Array, Array, Array]:
        """One example's sequence: tokens ``[P, W]`` in the compute dtype, valid flags
        ``[P]`` and AR flags ``[P]`` (0 on image tokens)."""
        image_tokens = jax.vmap(lambda image: self.vision(image, self.compute_dtype))(inputs.images)
        cameras, per_camera, width = image_tokens.shape
        tokens = jnp.concatenate(
            [
                image_tokens.reshape(cameras * per_camera, width),
                self.llm.embed(inputs.tokens).astype(self.compute_dtype),
            ]
        )
        valid = jnp.concatenate([jnp.repeat(inputs.image_masks, per_camera), inputs.token_mask])
        ar = jnp.concatenate([jnp.zeros(cameras * per_camera, jnp.int32), inputs.ar_mask.astype(jnp.int32)])
        return tokens, valid, ar

    def logits(self, pre_logits: Array) -> Array:
        """Final-normed ``[T, W]`` -> float32 logits ``[T, V]`` through the tied embedding
        (float32 accumulation whatever the compute dtype)."""
        table = self.llm.embedding.astype(pre_logits.dtype)
        return einsum("tw,vw->tv", pre_logits, table, out_dtype=jnp.float32)

    def forward(
        self, x: Array, pos: Array, mask: Array, kv_cache: KVCache | None = None
    ) -> tuple[Array, tuple[Array, Array]]:
        """The Gemma over tokens ``x`` ``[T, W]`` at ``pos`` ``[T]`` with ``mask`` ``[T, S]``:
        final-normed outputs ``[T, W]`` and this pass's keys/values ``[D, T, K, h]``."""
        (out,), kv = transformer((self.llm,), [x.astype(self.compute_dtype)], [None], pos, mask, kv_cache)
        return out, kv

    def training_pass(self, inputs: FASTInputs, drop_last: bool) -> Array:
        """Final-normed outputs of one full pass at training positions ``0..N-1`` with
        the prefix-LM mask: ``[P, W]``, or ``[P - 1, W]`` without the last token."""
        x, valid, ar = self.embed_inputs(inputs)
        mask = attention_mask(valid, ar)
        if drop_last:
            x, mask = x[:-1], mask[:-1, :-1]
        out, _ = self.forward(x, jnp.arange(x.shape[0]), mask)
        return out

    def loss(self, inputs: FASTInputs) -> Array:
        """One example's mean next-token negative log-likelihood over ``loss_mask[1:]`` (``[]``)."""
        # Each position predicts the next token; only the prompt's predictions are scored.
        targets = inputs.tokens[1:]
        out = self.training_pass(inputs, drop_last=True)
        logp = jax.nn.log_softmax(self.logits(out[-targets.shape[0] :]), axis=-1)
        token_logp = jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
        loss_mask = inputs.loss_mask[1:].astype(jnp.float32)
        return -jnp.sum(token_logp * loss_mask) / jnp.maximum(jnp.sum(loss_mask), 1.0)

    def prefill(self, x: Array, valid: Array, ar: Array, cache_size: int) -> tuple[Array, KVCache, Array]:
        """Right-align one example's prefix and run it into a KV cache.

        Returns the float32 logits ``[V]`` after the last prefix token, the cache
        (keys and values ``[D, cache_size, K, h]``, the prefix in the first ``P``
        slots) and ``prefill_len`` (the number of valid prefix tokens).
        """
        x, valid, mask = right_align(x, valid, attention_mask(valid, ar))
        out, (k, v) = self.forward(x, positions(valid), mask)
        pad = ((0, 0), (0, cache_size - x.shape[0]), (0, 0), (0, 0))
        return self.logits(out[-1:])[0], (jnp.pad(k, pad), jnp.pad(v, pad)), jnp.sum(valid)

    def decode_step(
        self, token: Array, cache: KVCache, prefill_len: Array, prefill_size: int, step: Array
    ) -> tuple[Array, KVCache]:
        """Feed generated token ``step`` (``token`` ``[]``) of one example; returns the
        float32 logits ``[V]`` for the next token and the cache with its keys/values
        written at slot ``prefill_size + step``."""
        x = self.llm.embed(token[None])
        slots = jnp.arange(cache[0].shape[1])
        # The valid prefix (contiguous after right-alignment) and the tokens decoded so far,
        # then this token itself (appended by the transformer after the cache).
        window = (slots >= prefill_size - prefill_len) & (slots < prefill_size + step)
        mask = jnp.concatenate([window, jnp.ones(1, bool)])[None]
        position = decode_positions(prefill_len, step, self.decode_position_offset)
        out, (k, v) = self.forward(x, position[None], mask, cache)
        zero = jnp.zeros_like(step)
        slot = (zero, prefill_size + step, zero, zero)
        cache = (lax.dynamic_update_slice(cache[0], k, slot), lax.dynamic_update_slice(cache[1], v, slot))
        return self.logits(out)[0], cache


class DecodeState(eqx.Module):
    """The carry of the decoding loop (leading ``B`` where batched)."""

    step: Array
    key: Array
    last_logits: Array
    cache: KVCache
    tokens: Array
    done: Array
    logits: Array | None
    running: Array


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def generate(
    model: Pi0FAST,
    inputs: FASTInputs,
    num_steps: Array,
    temperature: Array,
    key: Array,
    eos_token: Array,
    buffer: int,
    keep_logits: bool,
) -> tuple[Array, Array | None, Array]:
    """Decode up to ``num_steps`` (traced, at most ``buffer``) tokens.

    Greedy (argmax) when ``temperature`` is 0, else sampled from
    ``softmax(logits / temperature)`` with a key split off ``key`` each step. A row
    emits 0 after its ``eos_token``; the loop stops once every row did. Like every
    jitted entry point here it counts its traces (``eqx.debug.get_num_traces``).

    Returns int32 tokens ``[B, buffer]`` (zero-filled), the float32 logits that chose
    them ``[B, buffer, V]`` (None unless ``keep_logits``) and the number of steps run.
    """
    x, valid, ar = jax.vmap(model.embed_inputs)(inputs)
    batch, prefill_size = valid.shape
    prefill = jax.vmap(lambda x, valid, ar: model.prefill(x, valid, ar, prefill_size + buffer))
    last_logits, cache, prefill_len = prefill(x, valid, ar)
    decode_step = jax.vmap(model.decode_step, in_axes=(0, 0, 0, None, None))

    def body(state: DecodeState) -> DecodeState:
        key, step_key = jax.random.split(state.key)
        token = lax.cond(
            temperature > 0,
            lambda: jax.random.categorical(step_key, state.last_logits / temperature, axis=-1),
            lambda: jnp.argmax(state.last_logits, axis=-1),
        ).astype(jnp.int32)
        token = jnp.where(state.done, 0, token)
        zero = jnp.zeros_like(state.step)
        tokens = lax.dynamic_update_slice(state.tokens, token[:, None], (zero, state.step))
        logits = state.logits
        if logits is not None:
            logits = lax.dynamic_update_slice(logits, state.last_logits[:, None], (zero, state.step, zero))
        done = state.done | (token == eos_token)
        running = (state.step + 1 < num_steps) & ~jnp.all(done)
        # The logits after the last token would be discarded: skip that pass.
        next_logits, cache = lax.cond(
            running,
            lambda: decode_step(token, state.cache, prefill_len, prefill_size, state.step),
            lambda: (state.last_logits, state.cache),
        )
        return DecodeState(state.step + 1, key, next_logits, cache, tokens, done, logits, running)

    vocab = last_logits.shape[-1]
    init = DecodeState(
        step=jnp.int32(0),
        key=key,
        last_logits=last_logits,
        cache=cache,
        tokens=jnp.zeros((batch, buffer), jnp.int32),
        done=jnp.zeros(batch, bool),
        logits=jnp.zeros((batch, buffer, vocab), jnp.float32) if keep_logits else None,
        running=num_steps > 0,
    )
    final = lax.while_loop(lambda state: state.running, body, init)
    return final.tokens, final.logits, final.step


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def embed_inputs(model: Pi0FAST, inputs: FASTInputs) -> tuple[Array, Array, Array]:
    """Input tokens ``[B, P, W]``, valid flags ``[B, P]``, AR flags ``[B, P]``."""
    return jax.vmap(model.embed_inputs)(inputs)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def prefix_logits(model: Pi0FAST, inputs: FASTInputs) -> Array:
    """Logits ``[B, P, V]`` of one training-style pass over the whole sequence."""
    return jax.vmap(lambda inputs: model.logits(model.training_pass(inputs, drop_last=False)))(inputs)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def compute_loss(model: Pi0FAST, inputs: FASTInputs) -> Array:
    """Per-example loss ``[B]``."""
    return jax.vmap(model.loss)(inputs)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def loss_and_gradients(model: Pi0FAST, inputs: FASTInputs) -> tuple[Array, Pi0FAST]:
    """Loss ``[B]`` and the gradient of its mean, as a :class:`Pi0FAST` tree."""

    def mean_loss(model: Pi0FAST) -> tuple[Array, Array]:
        loss = jax.vmap(model.loss)(inputs)
        return jnp.mean(loss), loss

    (_, loss), grads = eqx.filter_value_and_grad(mean_loss, has_aux=True)(model)
    return loss, grads


class Pi0FASTModel(AbstractPi0FASTModel):
    """A π0-FAST model in JAX behind the backend-neutral numpy interface.

    Build it with :meth:`from_params`. Weights live in ``config.dtype``; with
    ``bfloat16`` the matmuls and the KV cache are bfloat16 while norms, RoPE,
    attention softmax, the logits (float32 accumulation) and the loss stay float32.
    Sampling (``temperature > 0``) draws from ``jax.random.key(seed)``, split once
    per step as openpi does.
    """

    def __init__(self, config: Pi0FASTConfig, module: Pi0FAST):
        self.config = config
        self.module = module

    @classmethod
    def from_params(cls, config: Pi0FASTConfig, params: Mapping[str, np.ndarray]) -> "Pi0FASTModel":
        """Build from canonical parameters (:func:`~openpi_core.models.pi0_weights.pi0_fast_weight_schema`).

        Raises:
            WeightsError: names or shapes differ from the schema, or a value is not finite.
        """
        params = check_against_schema(params, pi0_fast_weight_schema(config))
        check_params(params)
        skeleton = eqx.filter_eval_shape(Pi0FAST, config, key=jax.random.key(0))
        return cls(config, weights.fill(skeleton, params, jnp.dtype(config.dtype)))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical name -> numpy array in ``config.dtype``, exactly as loaded in that dtype."""
        return weights.export(self.module, pi0_fast_weight_schema(self.config))

    def inputs(self, observation: Observation, *, training: bool = False) -> FASTInputs:
        """Check ``observation`` against the config and convert it.

        Raises:
            InputError: a camera of ``config.image_keys`` is missing or mis-shaped, the
                prompt is missing, or (``training``) ``token_ar_mask`` /
                ``token_loss_mask`` are.
        """
        config = self.config
        check_cameras(config, observation)
        if observation.tokenized_prompt is None:
            raise InputError("π0-FAST needs Observation.tokenized_prompt (built by the FAST tokenizer), got None")
        if training:
            for field in ("token_ar_mask", "token_loss_mask"):
                if getattr(observation, field) is None:
                    raise InputError(f"the π0-FAST loss needs Observation.{field}, got None")
        tokens = observation.tokenized_prompt
        ar_mask = observation.token_ar_mask
        loss_mask = observation.token_loss_mask
        return FASTInputs(
            images=jnp.asarray(np.stack([observation.images[key] for key in config.image_keys], axis=1)),
            image_masks=jnp.asarray(np.stack([observation.image_masks[key] for key in config.image_keys], axis=1)),
            tokens=jnp.asarray(tokens),
            token_mask=jnp.asarray(observation.tokenized_prompt_mask),
            ar_mask=jnp.asarray(np.zeros_like(tokens) if ar_mask is None else ar_mask),
            loss_mask=None if loss_mask is None else jnp.asarray(loss_mask),
        )

    def _generate(
        self, observation: Observation, num_steps: int | None, temperature: float, seed: int, keep_logits: bool
    ) -> tuple[Array, Array | None, int]:
        num_steps = self.config.max_decoding_steps if num_steps is None else num_steps
        if num_steps < 1:
            raise InputError(f"num_steps should be at least 1, got {num_steps}")
        if temperature < 0:
            raise InputError(f"temperature should be at least 0, got {temperature}")
        # One buffer size (so one compilation) for every num_steps up to the configured maximum.
        buffer = max(num_steps, self.config.max_decoding_steps)
        tokens, logits, steps = generate(
            self.module,
            self.inputs(observation),
            jnp.asarray(num_steps, jnp.int32),
            jnp.asarray(temperature, jnp.float32),
            jax.random.key(seed),
            jnp.asarray(self.config.eos_token, jnp.int32),
            buffer,
            keep_logits,
        )
        return tokens, logits, int(steps)

    def sample_actions(
        self,
        observation: Observation,
        noise: np.ndarray | None = None,
        num_steps: int | None = None,
        seed: int = 0,
        *,
        temperature: float = 0.0,
    ) -> np.ndarray:
        tokens, _, _ = self._generate(observation, num_steps, temperature, seed, keep_logits=False)
        requested = self.config.max_decoding_steps if num_steps is None else num_steps
        return np.asarray(tokens[:, :requested], dtype=np.int32)

    def decode(
        self, observation: Observation, num_steps: int, temperature: float = 0.0, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens, logits, steps = self._generate(observation, num_steps, temperature, seed, keep_logits=True)
        return np.asarray(tokens[:, :steps], dtype=np.int32), np.asarray(logits[:, :steps], dtype=np.float32)

    def compute_loss(self, observation: Observation, actions: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(compute_loss(self.module, self.inputs(observation, training=True)), dtype=np.float32)

    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, valid, ar = embed_inputs(self.module, self.inputs(observation))
        return np.asarray(tokens, np.float32), np.asarray(valid), np.asarray(ar)

    def prefix_logits(self, observation: Observation) -> np.ndarray:
        return np.asarray(prefix_logits(self.module, self.inputs(observation)), dtype=np.float32)

    def loss_gradients(self, observation: Observation) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_gradients(self.module, self.inputs(observation, training=True))
        names = pi0_fast_weight_schema(self.config)
        return np.asarray(loss, dtype=np.float32), weights.export(grads, names, dtype=np.float32)
