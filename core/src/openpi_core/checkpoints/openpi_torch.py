"""Canonical weights <-> openpi's PyTorch model (``PI0Pytorch``) and LeRobot's pi0/pi05 ports.

The PyTorch model keeps one tensor per layer (``...layers.{i}...``) where the
canonical layout stacks layers on a leading axis, and uses ``nn.Linear`` weights
``[out, in]`` where the canonical layout keeps JAX kernels ``[in, out]``. Per tensor
(``W`` width, ``N`` query heads, ``K`` kv heads, ``h`` head dim; one layer):

====================================  ==============================  ==================
canonical (one layer)                 PyTorch                         mapping
====================================  ==============================  ==================
vision patch kernel ``[ph,pw,3,W]``   ``patch_embedding.weight``      ``[W,3,ph,pw]``
vision pos embed ``[1,P,W]``          ``position_embedding.weight``   ``[P,W]``
vision q/k/v kernel ``[W,N,h]``       ``{q,k,v}_proj.weight``         ``[N*h, W]``
vision q/k/v bias ``[N,h]``           ``{q,k,v}_proj.bias``           ``[N*h]``
vision out kernel ``[N,h,W]``         ``out_proj.weight``             ``[W, N*h]``
gemma q ``[N,W,h]``                   ``q_proj.weight``               ``[N*h, W]``
gemma kv ``[2,K,W,h]``                ``k_proj`` / ``v_proj.weight``  ``[K*h, W]`` each
gemma o ``[N,h,W]``                   ``o_proj.weight``               ``[W, N*h]``
gemma gate_up ``[2,W,M]``             ``gate_proj`` / ``up_proj``     ``[M, W]`` each
every other kernel ``[in,out]``       ``.weight``                     ``[out,in]``
====================================  ==============================  ==================

The output projections use the general mapping ``o[d, n*h + j] = attn_vec[n, j, d]``
for both experts. (openpi's converter reshapes the PaliGemma one in a way that is
only right when ``N*h == W``, which holds for its released models.)

Quirks of the files:

* The language embedding is tied to PaliGemma's ``lm_head``; safetensors keeps one
  copy, ``paligemma_with_expert.paligemma.lm_head.weight``, which is what is written.
  ``...language_model.embed_tokens.weight`` is accepted on import as well.
* ``paligemma_with_expert.gemma_expert.lm_head.weight`` exists in the PyTorch module
  but is never used (the action expert decodes no tokens). openpi loads with
  ``strict=True``, so the exporter writes it as zeros ``[vocab, expert width]``; the
  importer ignores it.
* LeRobot's policies hold the same module tree under ``model.``; that prefix is
  accepted on import.
* π0.5's adaptive norms are ``{input,post_attention}_layernorm.dense`` and
  ``norm.dense`` Linear layers in the action expert.
"""

import re
from collections.abc import Callable, Iterable, Mapping

import attrs
import numpy as np

from openpi_core.checkpoints.infer import image_size
from openpi_core.errors import WeightsError
from openpi_core.models.config import SIGLIP_VARIANTS, GemmaConfig, Pi0Config, SiglipConfig
from openpi_core.models.pi0_weights import Shape, check_against_schema, pi0_weight_schema

ROOT = "paligemma_with_expert."
PALIGEMMA = ROOT + "paligemma.model."
VISION = PALIGEMMA + "vision_tower.vision_model."
LLM = PALIGEMMA + "language_model."
EXPERT = ROOT + "gemma_expert.model."
EMBEDDING = ROOT + "paligemma.lm_head.weight"
EMBEDDING_ALIAS = LLM + "embed_tokens.weight"
UNUSED_EXPERT_HEAD = ROOT + "gemma_expert.lm_head.weight"
LEROBOT_PREFIX = "model."
DENSE_LAYERS = (
    "state_proj",
    "action_in_proj",
    "action_out_proj",
    "action_time_mlp_in",
    "action_time_mlp_out",
    "time_mlp_in",
    "time_mlp_out",
)
"""Top-level Linear layers (π0 has the first five, π0.5 the last four); same names in both."""
TIED_METADATA = {EMBEDDING_ALIAS: EMBEDDING}
"""The note ``safetensors.torch.save_model`` leaves about the tied embedding; written alike."""


@attrs.frozen
class Layout:
    """How one canonical tensor (one layer of it) becomes a PyTorch tensor and back.

    ``to_torch(x)``; ``from_torch(y, shape)`` with the canonical ``shape``;
    ``torch_shape(shape)`` the PyTorch shape of a canonical one.
    """

    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray, Shape], np.ndarray]
    torch_shape: Callable[[Shape], Shape]


COPY = Layout(lambda x: x, lambda y, s: y, lambda s: s)
FLAT = Layout(lambda x: x.reshape(-1), lambda y, s: y.reshape(s), lambda s: (int(np.prod(s)),))
ROWS = Layout(lambda x: x.reshape(-1, x.shape[-1]), lambda y, s: y.reshape(s), lambda s: (int(np.prod(s[:-1])), s[-1]))
LINEAR = Layout(lambda x: x.T, lambda y, s: y.T, lambda s: s[::-1])
PATCH = Layout(
    lambda x: x.transpose(3, 2, 0, 1), lambda y, s: y.transpose(2, 3, 1, 0), lambda s: (s[3], s[2], s[0], s[1])
)
HEADS_IN = Layout(  # [W, N, h] -> [N*h, W]
    lambda x: x.reshape(x.shape[0], -1).T, lambda y, s: y.T.reshape(s), lambda s: (int(np.prod(s[1:])), s[0])
)
HEADS_OUT = Layout(  # [N, h, W] -> [W, N*h]
    lambda x: x.reshape(-1, x.shape[-1]).T, lambda y, s: y.T.reshape(s), lambda s: (s[-1], int(np.prod(s[:-1])))
)
GEMMA_HEADS_IN = Layout(  # [N, W, h] -> [N*h, W]
    lambda x: x.transpose(0, 2, 1).reshape(-1, x.shape[1]),
    lambda y, s: y.reshape(s[0], s[2], s[1]).transpose(0, 2, 1),
    lambda s: (s[0] * s[2], s[1]),
)


@attrs.frozen
class Rule:
    """Canonical ``name`` (sub-tensor ``part`` of its per-layer slice, if set) <-> PyTorch ``key``.

    ``key`` contains ``{i}`` when the canonical tensor stacks layers on axis 0.
    """

    name: str
    key: str
    layout: Layout
    part: int | None = None

    @property
    def stacked(self) -> bool:
        return "{i}" in self.key


def _rules() -> list[Rule]:
    layer = VISION + "encoder.layers.{i}."
    rules = [
        Rule("vision.patch_embed.kernel", VISION + "embeddings.patch_embedding.weight", PATCH),
        Rule("vision.patch_embed.bias", VISION + "embeddings.patch_embedding.bias", COPY),
        Rule("vision.pos_embed", VISION + "embeddings.position_embedding.weight", ROWS),
        Rule("vision.final_norm.scale", VISION + "post_layernorm.weight", COPY),
        Rule("vision.final_norm.bias", VISION + "post_layernorm.bias", COPY),
        Rule("vision.head.kernel", PALIGEMMA + "multi_modal_projector.linear.weight", LINEAR),
        Rule("vision.head.bias", PALIGEMMA + "multi_modal_projector.linear.bias", COPY),
        Rule("vision.layers.attn.out.kernel", layer + "self_attn.out_proj.weight", HEADS_OUT),
        Rule("vision.layers.attn.out.bias", layer + "self_attn.out_proj.bias", COPY),
        Rule("llm.embedding", EMBEDDING, COPY),
    ]
    for ours, theirs in (("norm1", "layer_norm1"), ("norm2", "layer_norm2")):
        rules.append(Rule(f"vision.layers.{ours}.scale", f"{layer}{theirs}.weight", COPY))
        rules.append(Rule(f"vision.layers.{ours}.bias", f"{layer}{theirs}.bias", COPY))
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        rules.append(Rule(f"vision.layers.attn.{ours}.kernel", f"{layer}self_attn.{theirs}.weight", HEADS_IN))
        rules.append(Rule(f"vision.layers.attn.{ours}.bias", f"{layer}self_attn.{theirs}.bias", FLAT))
    for fc in ("fc1", "fc2"):
        rules.append(Rule(f"vision.layers.mlp.{fc}.kernel", f"{layer}mlp.{fc}.weight", LINEAR))
        rules.append(Rule(f"vision.layers.mlp.{fc}.bias", f"{layer}mlp.{fc}.bias", COPY))
    for prefix, root in (("llm", LLM), ("expert", EXPERT)):
        layer = root + "layers.{i}."
        rules += [
            Rule(f"{prefix}.layers.attn.q_proj", layer + "self_attn.q_proj.weight", GEMMA_HEADS_IN),
            Rule(f"{prefix}.layers.attn.kv_proj", layer + "self_attn.k_proj.weight", GEMMA_HEADS_IN, part=0),
            Rule(f"{prefix}.layers.attn.kv_proj", layer + "self_attn.v_proj.weight", GEMMA_HEADS_IN, part=1),
            Rule(f"{prefix}.layers.attn.o_proj", layer + "self_attn.o_proj.weight", HEADS_OUT),
            Rule(f"{prefix}.layers.mlp.gate_up", layer + "mlp.gate_proj.weight", LINEAR, part=0),
            Rule(f"{prefix}.layers.mlp.gate_up", layer + "mlp.up_proj.weight", LINEAR, part=1),
            Rule(f"{prefix}.layers.mlp.down", layer + "mlp.down_proj.weight", LINEAR),
        ]
        for ours, theirs in (
            ("layers.attn_norm", layer + "input_layernorm"),
            ("layers.mlp_norm", layer + "post_attention_layernorm"),
            ("final_norm", root + "norm"),
        ):
            rules.append(Rule(f"{prefix}.{ours}.scale", theirs + ".weight", COPY))
            rules.append(Rule(f"{prefix}.{ours}.modulation.kernel", theirs + ".dense.weight", LINEAR))
            rules.append(Rule(f"{prefix}.{ours}.modulation.bias", theirs + ".dense.bias", COPY))
    for dense in DENSE_LAYERS:
        rules.append(Rule(f"{dense}.kernel", f"{dense}.weight", LINEAR))
        rules.append(Rule(f"{dense}.bias", f"{dense}.bias", COPY))
    return rules


RULES: tuple[Rule, ...] = tuple(_rules())


def is_openpi_torch_naming(names: Iterable[str]) -> bool:
    """Whether any of ``names`` is an openpi-PyTorch or LeRobot model key."""
    return any(name.startswith((ROOT, LEROBOT_PREFIX + ROOT)) for name in names)


def strip_lerobot_prefix(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop LeRobot's leading ``model.`` from the keys that carry it."""
    if not any(name.startswith(LEROBOT_PREFIX + ROOT) for name in params):
        return dict(params)
    return {name.removeprefix(LEROBOT_PREFIX): value for name, value in params.items()}


def _layer_keys(rule: Rule, depth: int) -> list[str]:
    return [rule.key.format(i=i) for i in range(depth)] if rule.stacked else [rule.key]


def _piece_shape(rule: Rule, shape: Shape) -> Shape:
    """The canonical shape of one layer (and part) of a tensor of canonical ``shape``."""
    piece = shape[1:] if rule.stacked else shape
    return piece if rule.part is None else piece[1:]


def openpi_torch_schema(config: Pi0Config) -> dict[str, Shape]:
    """PyTorch key -> shape of every tensor the exporter writes for ``config``."""
    schema = pi0_weight_schema(config)
    shapes = {
        key: tuple(rule.layout.torch_shape(_piece_shape(rule, schema[rule.name])))
        for rule in RULES
        if rule.name in schema
        for key in _layer_keys(rule, schema[rule.name][0] if rule.stacked else 1)
    }
    shapes[UNUSED_EXPERT_HEAD] = (config.vocab_size, config.action_expert.width)
    return shapes


def openpi_torch_from_canonical(params: Mapping[str, np.ndarray], config: Pi0Config) -> dict[str, np.ndarray]:
    """The openpi-PyTorch state dict of canonical ``params``, with the zero ``gemma_expert.lm_head``.

    Arrays keep their dtype and are C-contiguous.

    Raises:
        WeightsError: ``params`` does not match ``config``'s weight schema.
    """
    schema = pi0_weight_schema(config)
    params = check_against_schema(params, schema)
    state: dict[str, np.ndarray] = {}
    for rule in RULES:
        if rule.name not in schema:
            continue
        array = np.asarray(params[rule.name])
        slices = list(array) if rule.stacked else [array]
        for key, piece in zip(_layer_keys(rule, len(slices)), slices, strict=True):
            state[key] = np.ascontiguousarray(rule.layout.to_torch(piece if rule.part is None else piece[rule.part]))
    embedding = params["llm.embedding"]
    state[UNUSED_EXPERT_HEAD] = np.zeros((config.vocab_size, config.action_expert.width), embedding.dtype)
    return state


def canonical_from_openpi_torch(params: Mapping[str, np.ndarray], config: Pi0Config) -> dict[str, np.ndarray]:
    """Canonical arrays from an openpi-PyTorch or LeRobot state dict.

    Raises:
        WeightsError: a tensor is missing, unexpected, or of the wrong shape (naming
            the PyTorch key, the expected and the found shape), or the two copies of
            the tied embedding differ.
    """
    state = strip_lerobot_prefix(params)
    if EMBEDDING_ALIAS in state:
        alias = state.pop(EMBEDDING_ALIAS)
        if EMBEDDING in state and not np.array_equal(state[EMBEDDING], alias):
            raise WeightsError(f"{EMBEDDING!r} and {EMBEDDING_ALIAS!r} are tied but hold different values")
        state.setdefault(EMBEDDING, alias)
    state.pop(UNUSED_EXPERT_HEAD, None)
    schema = pi0_weight_schema(config)
    canonical: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for rule in RULES:
        if rule.name not in schema:
            continue
        shape = schema[rule.name]
        keys = _layer_keys(rule, shape[0] if rule.stacked else 1)
        piece_shape = _piece_shape(rule, shape)
        expected = rule.layout.torch_shape(piece_shape)
        for index, key in enumerate(keys):
            if key not in state:
                raise WeightsError(f"missing parameter {key!r} (for {rule.name!r}, shape {list(expected)})")
            found = tuple(np.shape(state[key]))
            if found != tuple(expected):
                raise WeightsError(f"parameter {key!r} should have shape {list(expected)}, found {list(found)}")
            piece = rule.layout.from_torch(np.asarray(state[key]), piece_shape)
            if rule.name not in canonical:
                canonical[rule.name] = np.empty(shape, piece.dtype)
            where = ((index,) if rule.stacked else ()) + (() if rule.part is None else (rule.part,))
            canonical[rule.name][where] = piece
            used.add(key)
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise WeightsError(f"unexpected parameters {unexpected[:10]} ({len(unexpected)} in all)")
    return check_against_schema(canonical, schema)


_LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


def _depth(state: Mapping[str, np.ndarray], root: str) -> int:
    indices = {int(m.group(1)) for key in state if key.startswith(root) and (m := _LAYER_INDEX.search(key))}
    if not indices:
        raise WeightsError(f"cannot infer the model config: no layers under {root!r}")
    return max(indices) + 1


def _shape(state: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    if key not in state:
        raise WeightsError(f"cannot infer the model config: parameter {key!r} is missing")
    return tuple(np.shape(state[key]))


def _gemma(state: Mapping[str, np.ndarray], root: str) -> GemmaConfig:
    """Sizes of one Gemma, assuming one KV head as every openpi Gemma variant has."""
    layer = root + "layers.0."
    heads_x_dim, width = _shape(state, layer + "self_attn.q_proj.weight")
    head_dim = _shape(state, layer + "self_attn.k_proj.weight")[0]
    return GemmaConfig(
        width=width,
        depth=_depth(state, root),
        mlp_dim=_shape(state, layer + "mlp.gate_proj.weight")[0],
        num_heads=heads_x_dim // head_dim,
        num_kv_heads=1,
        head_dim=head_dim,
    )


def _siglip(state: Mapping[str, np.ndarray]) -> SiglipConfig:
    """Sizes of the vision tower; the head count comes from the known variant of that width."""
    width, _, patch_h, patch_w = _shape(state, VISION + "embeddings.patch_embedding.weight")
    depth = _depth(state, VISION)
    mlp_dim = _shape(state, VISION + "encoder.layers.0.mlp.fc1.weight")[0]
    num_patches = _shape(state, VISION + "embeddings.position_embedding.weight")[0]
    variants = [v for v in SIGLIP_VARIANTS.values() if (v.width, v.depth, v.mlp_dim) == (width, depth, mlp_dim)]
    if not variants:
        raise WeightsError(
            f"cannot infer the number of SigLIP attention heads: openpi-PyTorch weights do not record it, and a "
            f"vision tower of width {width}, depth {depth}, mlp dim {mlp_dim} matches no known variant "
            f"({sorted(SIGLIP_VARIANTS)}); pass the model config"
        )
    return attrs.evolve(
        variants[0], patch_size=(patch_h, patch_w), image_size=image_size(num_patches, (patch_h, patch_w))
    )


def infer_config_from_openpi_torch(params: Mapping[str, np.ndarray]) -> Pi0Config:
    """The :class:`Pi0Config` of an openpi-PyTorch / LeRobot state dict, from its shapes.

    The PyTorch layout merges attention heads, so heads are recovered by assumption:
    one KV head per Gemma (true of every openpi variant) and the SigLIP variant of
    the same width, depth and mlp dim. ``action_horizon`` and ``max_token_len`` keep
    their defaults; ``dtype`` is float32.

    Raises:
        WeightsError: a tensor needed to infer the sizes is missing, or the vision
            tower matches no known variant.
    """
    state = strip_lerobot_prefix(params)
    pi05 = EXPERT + "norm.dense.weight" in state
    embedding = state.get(EMBEDDING, state.get(EMBEDDING_ALIAS))
    if embedding is None:
        raise WeightsError(f"cannot infer the model config: parameter {EMBEDDING!r} is missing")
    return Pi0Config(
        llm=_gemma(state, LLM),
        action_expert=_gemma(state, EXPERT),
        vision=_siglip(state),
        vocab_size=np.shape(embedding)[0],
        pi05=pi05,
        action_dim=_shape(state, "action_in_proj.weight")[1],
        dtype="float32",
    )
