"""π0-FAST in PyTorch: one Gemma decoding FAST action tokens after a SigLIP + prompt prefix.

:class:`Pi0FASTModule` is the ``nn.Module`` (tensors in, tensors out); :class:`Pi0FASTModel`
wraps it behind :class:`openpi_core.models.api.AbstractPi0FASTModel` (numpy in, numpy out).
The LLM is :class:`~openpi_backend_torch.gemma.GemmaMixture` with a single expert, and its
embedding table doubles as the output projection.

Training and :meth:`Pi0FASTModule.prefix_logits` run one pass with positions ``0..N-1``
under the prefix-LM mask. Decoding follows the reference:

* the prefix (images, then the prompt) is right-aligned per row, so that its valid
  tokens end at slot ``P - 1`` of a KV cache preallocated for ``P + S`` slots;
* the prefill runs with positions ``cumsum(valid) - 1``; its last logit picks token 0;
* generated token ``s`` is written at cache slot ``P + s`` and fed at RoPE position
  ``prefill_len + s + offset`` (openpi's offset 1 never uses position ``prefill_len``;
  see ``Pi0FASTConfig.decode_position_offset``), attending to
  the contiguous window ``[P - prefill_len, P + s]`` of the cache;
* a row stops once it emitted ``eos_token`` (its later tokens are 0); the loop stops when
  every row has stopped. Stopped rows keep feeding their argmax token, so every logit
  that is returned equals the reference's.

:meth:`Pi0FASTModule.decode_step` has static shapes (the step index is a tensor, the
cache is written in place with ``index_copy_`` and attention reads the whole cache under
a mask), so ``torch.compile(fullgraph=True)`` turns it into one graph reused by every step.

Shapes: ``B`` batch, ``C`` cameras, ``P`` prefix tokens (``C·patches + L``), ``L`` prompt
tokens, ``S`` decoding steps, ``V`` vocabulary, ``W`` LLM width.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from openpi_backend_torch import weights
from openpi_backend_torch.gemma import MASKED_LOGIT, ExpertLayer, GemmaMixture, KVCache, apply_rope, attend, rope_tables
from openpi_backend_torch.inputs import observation_inputs
from openpi_backend_torch.precision import exact_float32
from openpi_backend_torch.siglip import SiglipEncoder
from openpi_core.errors import InputError
from openpi_core.models.api import AbstractPi0FASTModel, check_params
from openpi_core.models.config import Pi0FASTConfig
from openpi_core.observation import Observation

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclasses.dataclass
class FASTInputs:
    """An :class:`Observation` for π0-FAST as tensors on the model's device.

    Attributes:
        images: float32 ``[C, B, H, W, 3]``, cameras in ``config.image_keys`` order.
        image_masks: bool ``[C, B]``.
        tokens: int64 ``[B, L]`` prompt ids.
        token_mask: bool ``[B, L]``.
        ar: int64 ``[B, L]`` "starts a new attention block" flags (zeros when not given).
        loss_mask: bool ``[B, L]`` tokens to predict, or None.
    """

    images: Tensor
    image_masks: Tensor
    tokens: Tensor
    token_mask: Tensor
    ar: Tensor
    loss_mask: Tensor | None


def fast_inputs(config: Pi0FASTConfig, observation: Observation, device: torch.device) -> FASTInputs:
    """Check ``observation`` against ``config`` and convert it.

    Raises:
        InputError: as :func:`~openpi_backend_torch.inputs.observation_inputs`, or the
            prompt is missing or its token masks are not ``[B, L]``.
    """
    base = observation_inputs(config, observation, device)
    if observation.tokenized_prompt is None or base.tokens.shape[1] == 0:
        raise InputError("π0-FAST needs Observation.tokenized_prompt (built by the FAST tokenizer)")
    shape = tuple(base.tokens.shape)

    def optional(name: str, dtype: torch.dtype) -> Tensor | None:
        array = getattr(observation, name)
        if array is None:
            return None
        if array.shape != shape:
            raise InputError(
                f"Observation.{name} should have shape {list(shape)} like the prompt, got {list(array.shape)}"
            )
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)

    ar = optional("token_ar_mask", torch.int64)
    return FASTInputs(
        images=base.images,
        image_masks=base.image_masks,
        tokens=base.tokens,
        token_mask=base.token_mask,
        ar=torch.zeros(shape, dtype=torch.int64, device=device) if ar is None else ar,
        loss_mask=optional("token_loss_mask", torch.bool),
    )


def make_attn_mask(valid: Tensor, ar: Tensor) -> Tensor:
    """Block-causal mask bool ``[B, N, N]`` from the valid mask bool ``[B, N]`` and per-row
    "starts a new block" flags int ``[B, N]``: query ``i`` may see key ``j`` when both are
    valid and ``cumsum(ar)[j] <= cumsum(ar)[i]``."""
    blocks = torch.cumsum(ar.to(torch.int64), dim=1)
    causal = blocks[:, None, :] <= blocks[:, :, None]
    return causal & valid[:, None, :] & valid[:, :, None]


def right_align(tokens: Tensor, valid: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Roll every row left by (index of its last valid token + 1), so that the last valid
    token lands at ``P - 1``; trailing padding wraps to the front. ``tokens`` ``[B, P, W]``,
    ``valid`` ``[B, P]``, ``mask`` ``[B, P, P]`` (rolled along both axes)."""
    length = valid.shape[1]
    index = torch.arange(length, device=valid.device)
    shift = (valid.to(torch.int64) * index).amax(dim=1) + 1
    source = (index[None, :] + shift[:, None]) % length
    tokens = tokens.gather(1, source[:, :, None].expand(-1, -1, tokens.shape[-1]))
    mask = mask.gather(1, source[:, :, None].expand(-1, -1, length))
    mask = mask.gather(2, source[:, None, :].expand(-1, length, -1))
    return tokens, valid.gather(1, source), mask


def select_tokens(logits: Tensor, temperature: float, uniform: Tensor | None) -> Tensor:
    """Token ids int64 ``[B]`` from float32 ``logits`` ``[B, V]``: the argmax (first on
    ties) at temperature 0, else a sample of ``softmax(logits / temperature)`` by the
    Gumbel-max trick on ``uniform`` ``[B, V]`` draws in ``[0, 1)``."""
    if temperature > 0.0:
        if uniform is None:
            raise ValueError("sampling at a positive temperature needs uniform draws")
        return torch.argmax(logits / temperature - torch.log(-torch.log(uniform)), dim=-1)
    return torch.argmax(logits, dim=-1)


@dataclasses.dataclass
class DecodeCache:
    """What every decoding step of one call shares.

    Attributes:
        kv: keys/values ``[D, B, K, P + S, h]``; the right-aligned prefix fills ``[0, P)``
            and generated token ``s`` slot ``P + s``.
        prefill_len: int64 ``[B]`` valid prefix tokens per row.
        prefill_size: ``P``.
    """

    kv: KVCache
    prefill_len: Tensor
    prefill_size: int


def _decode_layer(
    expert: ExpertLayer,
    x: Tensor,
    rope: tuple[Tensor, Tensor],
    mask: Tensor,
    keys: Tensor,
    values: Tensor,
    slot: Tensor,
) -> Tensor:
    """One layer for one new token ``x`` ``[B, 1, W]``: its key/value go into this layer's
    cache ``[B, K, P + S, h]`` at ``slot`` (a 1-element int64 tensor), then it attends to
    the cache under the additive ``mask`` ``[B, 1, 1, P + S]``."""
    normed, _ = expert.attn_norm(x)
    q, k, v = expert.project(normed)
    keys.index_copy_(2, slot, apply_rope(k, rope).transpose(1, 2))
    values.index_copy_(2, slot, v.transpose(1, 2))
    q = apply_rope(q, rope).transpose(1, 2)
    encoded = attend(q, keys, values, mask, expert.config.num_kv_heads).transpose(1, 2).flatten(2)
    x = x + expert.o_proj(encoded)
    y, _ = expert.mlp_norm(x)
    return x + expert.mlp(y)


class Pi0FASTModule(nn.Module):
    """The parameters and the math of π0-FAST.

    Matmul weights (and the embedding table) are in ``config.dtype``. Float32 islands, as
    in the reference: norm parameters and arithmetic, RoPE, the attention softmax, the
    patch and position embeddings, and the log-softmax of the loss. In bfloat16 the
    logits are the bfloat16 product of the last hidden state and the embedding table
    (as openpi computes them with bfloat16 weights), widened to float32.
    """

    def __init__(self, config: Pi0FASTConfig) -> None:
        super().__init__()
        self.config = config
        dtype = COMPUTE_DTYPES[config.dtype]
        self.vision = SiglipEncoder(config.vision, config.llm.width, dtype)
        self.gemma = GemmaMixture((config.llm,), (False,), config.vocab_size, dtype)

    def embed_prefix(self, inputs: FASTInputs) -> tuple[Tensor, Tensor, Tensor]:
        """Input tokens ``[B, P, W]`` (compute dtype), valid mask bool ``[B, P]``, AR flags
        int64 ``[B, P]`` (0 on image tokens, the prompt's own flags after them)."""
        cameras, batch = inputs.image_masks.shape
        image_tokens = self.vision(inputs.images.flatten(0, 1)).unflatten(0, (cameras, batch))
        patches = image_tokens.shape[2]
        image_tokens = image_tokens.transpose(0, 1).flatten(1, 2)
        image_valid = inputs.image_masks.T[:, :, None].expand(batch, cameras, patches).flatten(1)
        tokens = torch.cat([image_tokens, self.gemma.embed(inputs.tokens)], dim=1)
        valid = torch.cat([image_valid, inputs.token_mask], dim=1)
        ar = torch.cat([torch.zeros_like(image_valid, dtype=torch.int64), inputs.ar], dim=1)
        return tokens, valid, ar

    def logits(self, hidden: Tensor) -> Tensor:
        """float32 logits ``[..., V]`` of final-normed hidden states ``[..., W]`` (tied embedding)."""
        return F.linear(hidden, self.gemma.embedding.weight).float()

    def _train_pass(self, tokens: Tensor, valid: Tensor, ar: Tensor) -> Tensor:
        """Final-normed hidden states ``[B, N, W]`` of one pass with positions ``0..N-1``."""
        batch, length = valid.shape
        positions = torch.arange(length, device=valid.device)[None, :].expand(batch, length)
        (hidden,) = self.gemma([tokens], positions, make_attn_mask(valid, ar))
        return hidden

    def prefix_logits(self, inputs: FASTInputs) -> Tensor:
        """float32 logits ``[B, P, V]`` of one training-style pass over the whole prefix."""
        return self.logits(self._train_pass(*self.embed_prefix(inputs)))

    def loss(self, inputs: FASTInputs) -> Tensor:
        """Mean next-token negative log-likelihood float32 ``[B]`` over ``loss_mask[:, 1:]``.

        Every input token but the last predicts its successor; logits are computed only
        for the prompt's positions."""
        if inputs.loss_mask is None:
            raise InputError("the π0-FAST loss needs Observation.token_loss_mask")
        prompt_len = inputs.tokens.shape[1]
        if prompt_len < 2:
            raise InputError(f"the π0-FAST loss needs a prompt of at least 2 tokens, got {prompt_len}")
        tokens, valid, ar = self.embed_prefix(inputs)
        hidden = self._train_pass(tokens[:, :-1], valid[:, :-1], ar[:, :-1])
        logp = torch.log_softmax(self.logits(hidden[:, -(prompt_len - 1) :]), dim=-1)
        token_logp = logp.gather(-1, inputs.tokens[:, 1:, None])[..., 0]
        loss_mask = inputs.loss_mask[:, 1:].to(torch.float32)
        return -(token_logp * loss_mask).sum(dim=-1) / loss_mask.sum(dim=-1).clamp(min=1.0)

    def prefill(self, inputs: FASTInputs, num_steps: int) -> tuple[Tensor, DecodeCache]:
        """Right-align the prefix and run it into a cache of ``P + num_steps`` slots.
        Returns the last prefix token's float32 logits ``[B, V]`` and the cache."""
        tokens, valid, ar = self.embed_prefix(inputs)
        tokens, valid, mask = right_align(tokens, valid, make_attn_mask(valid, ar))
        batch, prefill_size = valid.shape
        kv = KVCache.allocate(
            self.config.llm,
            batch,
            prefill_size + num_steps,
            dtype=self.gemma.embedding.weight.dtype,
            device=tokens.device,
        )
        positions = torch.cumsum(valid.to(torch.int64), dim=1) - 1
        (hidden,) = self.gemma([tokens], positions, mask, cache=kv)
        cache = DecodeCache(kv=kv, prefill_len=valid.sum(dim=1), prefill_size=prefill_size)
        return self.logits(hidden[:, -1]), cache

    def forward_token(self, token: Tensor, step: Tensor, cache: DecodeCache) -> Tensor:
        """float32 logits ``[B, V]`` after feeding generated token ``step`` (``token`` int64
        ``[B]``, ``step`` a 0-dim int64 tensor): cache slot ``P + step``, position
        ``prefill_len + step + offset``, attending to slots ``[P - prefill_len, P + step]``."""
        slot = (cache.prefill_size + step).reshape(1)
        positions = cache.prefill_len[:, None] + step + self.config.decode_position_offset
        slots = torch.arange(cache.kv.keys.shape[3], device=token.device)
        visible = (slots[None, :] >= (cache.prefill_size - cache.prefill_len)[:, None]) & (slots[None, :] <= slot)
        x = self.gemma.embed(token[:, None])
        mask = torch.where(visible, 0.0, MASKED_LOGIT).to(x.dtype)[:, None, None, :]
        rope = rope_tables(positions, self.config.llm.head_dim)
        for index, layer in enumerate(self.gemma.layers):
            x = _decode_layer(layer.experts[0], x, rope, mask, cache.kv.keys[index], cache.kv.values[index], slot)
        hidden, _ = self.gemma.final_norms[0](x)
        return self.logits(hidden[:, 0])

    def emit(self, logits: Tensor, done: Tensor, temperature: float, uniform: Tensor | None) -> tuple[Tensor, ...]:
        """Pick the next token of every row: (picked int64 ``[B]``, emitted int64 ``[B]``
        (0 in rows that already stopped), done bool ``[B]`` (now including rows that
        emitted EOS))."""
        picked = select_tokens(logits, temperature, uniform)
        emitted = torch.where(done, torch.zeros_like(picked), picked)
        return picked, emitted, done | (emitted == self.config.eos_token)

    def decode_step(
        self,
        token: Tensor,
        done: Tensor,
        step: Tensor,
        cache: DecodeCache,
        temperature: float = 0.0,
        uniform: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Feed ``token`` (generated token number ``step``) and pick the next one.

        Static shapes throughout, so this compiles to one graph. Returns (picked token,
        emitted token, done, the float32 logits ``[B, V]`` that picked it)."""
        logits = self.forward_token(token, step, cache)
        return (*self.emit(logits, done, temperature, uniform), logits)

    def generate(
        self,
        inputs: FASTInputs,
        num_steps: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        step: Callable[..., tuple[Tensor, ...]] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Decode at most ``num_steps`` tokens. Returns emitted tokens int64 ``[B, n]`` and
        the float32 logits ``[B, n, V]`` that picked them; ``n < num_steps`` when every row
        stopped early. ``step`` replaces :meth:`decode_step` (e.g. by a compiled version)."""
        step = step or self.decode_step
        logits, cache = self.prefill(inputs, num_steps)
        batch, vocab = logits.shape

        def draws() -> Tensor | None:
            if temperature <= 0.0:
                return None
            return torch.rand((batch, vocab), generator=generator, dtype=torch.float32, device=logits.device)

        done = torch.zeros(batch, dtype=torch.bool, device=logits.device)
        picked, emitted, done = self.emit(logits, done, temperature, draws())
        step_index = torch.arange(num_steps, device=logits.device)
        tokens, all_logits = [emitted], [logits]
        for index in range(num_steps - 1):
            if bool(done.all()):
                break
            picked, emitted, done, logits = step(picked, done, step_index[index], cache, temperature, draws())
            tokens.append(emitted)
            all_logits.append(logits)
        return torch.stack(tokens, dim=1), torch.stack(all_logits, dim=1)


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


class Pi0FASTModel(AbstractPi0FASTModel):
    """A :class:`Pi0FASTModule` behind the backend-neutral numpy contract.

    Inference runs under ``torch.inference_mode()`` and :func:`exact_float32`. The decoding
    step can be swapped for a compiled one with :meth:`compile`.
    """

    def __init__(self, config: Pi0FASTConfig, module: Pi0FASTModule) -> None:
        self.config = config
        self.module = module.eval()
        self._step: Callable[..., tuple[Tensor, ...]] = module.decode_step

    @classmethod
    def from_params(
        cls, config: Pi0FASTConfig, params: Mapping[str, np.ndarray], device: str | torch.device = "cpu"
    ) -> "Pi0FASTModel":
        """Build from canonical parameters (names and layouts of
        :func:`~openpi_core.models.pi0_weights.pi0_fast_weight_schema`), on the meta device
        first so that memory holds one copy of the weights.

        Raises:
            WeightsError: a parameter is missing, unexpected, mis-shaped or not finite.
        """
        check_params(params)
        with torch.device("meta"):
            module = Pi0FASTModule(config)
        weights.load_into(module, config, params)
        return cls(config, module.to(device))

    @property
    def device(self) -> torch.device:
        return self.module.gemma.embedding.weight.device

    def compile(self, **options) -> None:
        """Compile the decoding step with ``torch.compile(fullgraph=True, **options)``."""
        self._step = torch.compile(self.module.decode_step, fullgraph=True, **options)

    def _inputs(self, observation: Observation) -> FASTInputs:
        return fast_inputs(self.config, observation, self.device)

    def _generate(self, observation: Observation, num_steps: int, temperature: float, seed: int) -> tuple[Tensor, ...]:
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise InputError(f"num_steps should be a positive integer, got {num_steps!r}")
        if not (math.isfinite(temperature) and temperature >= 0.0):
            raise InputError(f"temperature should be a finite number >= 0, got {temperature!r}")
        generator = None
        if temperature > 0.0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed)
        # Tensors are made inside inference mode: a compiled step guards on it.
        with exact_float32(), torch.inference_mode():
            return self.module.generate(self._inputs(observation), num_steps, float(temperature), generator, self._step)

    def sample_actions(
        self,
        observation: Observation,
        noise: np.ndarray | None = None,
        num_steps: int | None = None,
        seed: int = 0,
        *,
        temperature: float = 0.0,
    ) -> np.ndarray:
        num_steps = self.config.max_decoding_steps if num_steps is None else num_steps
        tokens, _ = self._generate(observation, num_steps, temperature, seed)
        out = np.zeros((tokens.shape[0], num_steps), dtype=np.int32)
        out[:, : tokens.shape[1]] = tokens.cpu().numpy()
        return out

    def decode(
        self, observation: Observation, num_steps: int, temperature: float = 0.0, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        tokens, logits = self._generate(observation, num_steps, temperature, seed)
        return tokens.cpu().numpy().astype(np.int32), _numpy(logits)

    def compute_loss(self, observation: Observation, actions: np.ndarray | None = None) -> np.ndarray:
        with exact_float32(), torch.inference_mode():
            return _numpy(self.module.loss(self._inputs(observation)))

    def embed_prefix(self, observation: Observation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with exact_float32(), torch.inference_mode():
            tokens, valid, ar = self.module.embed_prefix(self._inputs(observation))
            return _numpy(tokens), valid.cpu().numpy(), ar.cpu().numpy().astype(np.int32)

    def prefix_logits(self, observation: Observation) -> np.ndarray:
        with exact_float32(), torch.inference_mode():
            return _numpy(self.module.prefix_logits(self._inputs(observation)))

    def loss_gradients(self, observation: Observation) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        params = dict(self.module.named_parameters())
        with exact_float32(), torch.enable_grad():
            loss = self.module.loss(self._inputs(observation))
            grads = torch.autograd.grad(loss.mean(), list(params.values()), allow_unused=True)
        by_name = {
            name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads, strict=True)
        }
        return _numpy(loss), weights.canonical_from_module_state(self.config, by_name)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Canonical name -> float32 array. Bit-identical to the loaded weights in float32
        mode; in bfloat16 mode, the bfloat16 weights widened to float32."""
        return weights.canonical_from_module_state(self.config, dict(self.module.named_parameters()))
