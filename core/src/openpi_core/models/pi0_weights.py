"""The canonical parameter names and shapes of π0 and π0.5, and their openpi JAX names.

Canonical names are dotted paths; layer stacks keep a leading ``depth`` axis (both
backends run layers with a scan or a loop over that axis), and tensors keep the
layouts of openpi's JAX checkpoints, so importing one is a pure rename.

Layouts (``D`` depth, ``W`` width, ``N`` query heads, ``K`` kv heads, ``h`` head dim,
``M`` mlp dim, ``V`` vocab, ``A`` action dim; ``v`` prefixes the vision tower):

==========================================  ==========================
``vision.patch_embed.kernel``               ``[ph, pw, 3, vW]`` (HWIO)
``vision.pos_embed``                        ``[1, patches, vW]``
``vision.layers.attn.{query,key,value}.kernel``  ``[vD, vW, vN, vh]``
``vision.layers.attn.out.kernel``           ``[vD, vN, vh, vW]``
``vision.layers.mlp.fc1.kernel``            ``[vD, vW, vM]``
``vision.head.kernel``                      ``[vW, W_llm]``
``llm.embedding``                           ``[V, W_llm]``
``{llm,expert}.layers.attn.q_proj``         ``[D, N, W, h]``
``{llm,expert}.layers.attn.kv_proj``        ``[D, 2, K, W, h]``
``{llm,expert}.layers.attn.o_proj``         ``[D, N, h, W]``
``{llm,expert}.layers.mlp.gate_up``         ``[D, 2, W, M]``
``{llm,expert}.layers.mlp.down``            ``[D, M, W]``
``*.kernel`` of dense layers                ``[in, out]``
==========================================  ==========================

π0.5's adaptive norms in the action expert replace ``.scale`` with
``.modulation.kernel [.., W, 3W]`` and ``.modulation.bias [.., 3W]`` (scale, shift, gate).
"""

from collections.abc import Mapping

import numpy as np

from openpi_core.errors import WeightsError
from openpi_core.models.config import GemmaConfig, Pi0Config, Pi0FASTConfig

Shape = tuple[int, ...]


def vision_schema(config: Pi0Config | Pi0FASTConfig) -> dict[str, Shape]:
    """SigLIP tower + Dense head, projecting to the LLM width."""
    v = config.vision
    d, w, n, h, m = v.depth, v.width, v.num_heads, v.head_dim, v.mlp_dim
    schema: dict[str, Shape] = {
        "vision.patch_embed.kernel": (*v.patch_size, 3, w),
        "vision.patch_embed.bias": (w,),
        "vision.pos_embed": (1, v.num_patches, w),
        "vision.final_norm.scale": (w,),
        "vision.final_norm.bias": (w,),
        "vision.head.kernel": (w, config.llm.width),
        "vision.head.bias": (config.llm.width,),
    }
    for norm in ("norm1", "norm2"):
        schema[f"vision.layers.{norm}.scale"] = (d, w)
        schema[f"vision.layers.{norm}.bias"] = (d, w)
    for proj in ("query", "key", "value"):
        schema[f"vision.layers.attn.{proj}.kernel"] = (d, w, n, h)
        schema[f"vision.layers.attn.{proj}.bias"] = (d, n, h)
    schema["vision.layers.attn.out.kernel"] = (d, n, h, w)
    schema["vision.layers.attn.out.bias"] = (d, w)
    schema["vision.layers.mlp.fc1.kernel"] = (d, w, m)
    schema["vision.layers.mlp.fc1.bias"] = (d, m)
    schema["vision.layers.mlp.fc2.kernel"] = (d, m, w)
    schema["vision.layers.mlp.fc2.bias"] = (d, w)
    return schema


def gemma_schema(prefix: str, g: GemmaConfig, *, adaptive_norms: bool) -> dict[str, Shape]:
    """One Gemma expert's layer stack and final norm (no embedding)."""
    d, w = g.depth, g.width
    schema: dict[str, Shape] = {
        f"{prefix}.layers.attn.q_proj": (d, g.num_heads, w, g.head_dim),
        f"{prefix}.layers.attn.kv_proj": (d, 2, g.num_kv_heads, w, g.head_dim),
        f"{prefix}.layers.attn.o_proj": (d, g.num_heads, g.head_dim, w),
        f"{prefix}.layers.mlp.gate_up": (d, 2, w, g.mlp_dim),
        f"{prefix}.layers.mlp.down": (d, g.mlp_dim, w),
    }
    for norm, stacked in (("layers.attn_norm", True), ("layers.mlp_norm", True), ("final_norm", False)):
        lead = (d,) if stacked else ()
        if adaptive_norms:
            schema[f"{prefix}.{norm}.modulation.kernel"] = (*lead, w, 3 * w)
            schema[f"{prefix}.{norm}.modulation.bias"] = (*lead, 3 * w)
        else:
            schema[f"{prefix}.{norm}.scale"] = (*lead, w)
    return schema


def pi0_weight_schema(config: Pi0Config) -> dict[str, Shape]:
    """Canonical name -> shape of every parameter of a π0 or π0.5 model."""
    we, a = config.action_expert.width, config.action_dim
    schema = vision_schema(config)
    schema["llm.embedding"] = (config.vocab_size, config.llm.width)
    schema.update(gemma_schema("llm", config.llm, adaptive_norms=False))
    schema.update(gemma_schema("expert", config.action_expert, adaptive_norms=config.pi05))
    schema.update(
        {
            "action_in_proj.kernel": (a, we),
            "action_in_proj.bias": (we,),
            "action_out_proj.kernel": (we, a),
            "action_out_proj.bias": (a,),
        }
    )
    if config.pi05:
        time_mlp = {"time_mlp_in": (we, we), "time_mlp_out": (we, we)}
    else:
        schema["state_proj.kernel"] = (a, we)
        schema["state_proj.bias"] = (we,)
        time_mlp = {"action_time_mlp_in": (2 * we, we), "action_time_mlp_out": (we, we)}
    for name, shape in time_mlp.items():
        schema[f"{name}.kernel"] = shape
        schema[f"{name}.bias"] = (shape[1],)
    return schema


def pi0_fast_weight_schema(config: Pi0FASTConfig) -> dict[str, Shape]:
    """Canonical name -> shape of every parameter of a π0-FAST model: the vision tower and
    one Gemma (``llm.*``) whose embedding table doubles as the output projection."""
    schema = vision_schema(config)
    schema["llm.embedding"] = (config.vocab_size, config.llm.width)
    schema.update(gemma_schema("llm", config.llm, adaptive_norms=False))
    return schema


def count_parameters(schema: Mapping[str, Shape]) -> int:
    """Number of scalars in a schema, computed from shapes alone (nothing allocated)."""
    return sum(int(np.prod(shape, dtype=np.int64)) for shape in schema.values())


_VISION_OPENPI = {
    "patch_embed": "embedding",
    "pos_embed": "pos_embedding",
    "final_norm": "Transformer/encoder_norm",
    "head": "head",
    "layers.norm1": "Transformer/encoderblock/LayerNorm_0",
    "layers.norm2": "Transformer/encoderblock/LayerNorm_1",
    "layers.attn": "Transformer/encoderblock/MultiHeadDotProductAttention_0",
    "layers.mlp.fc1": "Transformer/encoderblock/MlpBlock_0/Dense_0",
    "layers.mlp.fc2": "Transformer/encoderblock/MlpBlock_0/Dense_1",
}

_GEMMA_OPENPI = {
    "layers.attn.q_proj": "layers/attn/q_einsum{s}/w",
    "layers.attn.kv_proj": "layers/attn/kv_einsum{s}/w",
    "layers.attn.o_proj": "layers/attn/attn_vec_einsum{s}/w",
    "layers.mlp.gate_up": "layers/mlp{s}/gating_einsum",
    "layers.mlp.down": "layers/mlp{s}/linear",
    "layers.attn_norm.scale": "layers/pre_attention_norm{s}/scale",
    "layers.mlp_norm.scale": "layers/pre_ffw_norm{s}/scale",
    "final_norm.scale": "final_norm{s}/scale",
    "layers.attn_norm.modulation.kernel": "layers/pre_attention_norm{s}/Dense_0/kernel",
    "layers.attn_norm.modulation.bias": "layers/pre_attention_norm{s}/Dense_0/bias",
    "layers.mlp_norm.modulation.kernel": "layers/pre_ffw_norm{s}/Dense_0/kernel",
    "layers.mlp_norm.modulation.bias": "layers/pre_ffw_norm{s}/Dense_0/bias",
    "final_norm.modulation.kernel": "final_norm{s}/Dense_0/kernel",
    "final_norm.modulation.bias": "final_norm{s}/Dense_0/bias",
}


def openpi_jax_name(name: str) -> str:
    """The openpi JAX checkpoint path (``/``-joined) of canonical parameter ``name``."""
    head, _, rest = name.partition(".")
    if head == "vision":
        for ours, theirs in _VISION_OPENPI.items():
            if rest == ours or rest.startswith(ours + "."):
                leaf = rest[len(ours) :].lstrip(".").replace(".", "/")
                return "/".join(p for p in ("PaliGemma/img", theirs, leaf) if p)
    elif head == "llm" and rest == "embedding":
        return "PaliGemma/llm/embedder/input_embedding"
    elif head in ("llm", "expert") and rest in _GEMMA_OPENPI:
        return "PaliGemma/llm/" + _GEMMA_OPENPI[rest].format(s="" if head == "llm" else "_1")
    elif "." in rest or rest in ("kernel", "bias"):
        return name.replace(".", "/")
    raise WeightsError(f"no openpi JAX name is known for parameter {name!r}")


def rename_from_openpi_jax(params: Mapping[str, np.ndarray], schema: Mapping[str, Shape]) -> dict[str, np.ndarray]:
    """Take openpi-JAX-named arrays (``/``-joined paths) to canonical names.

    Raises:
        WeightsError: a parameter of the schema is missing, has the wrong shape, or
            the checkpoint holds parameters the schema does not know.
    """
    wanted = {openpi_jax_name(name): name for name in schema}
    unexpected = sorted(set(params) - set(wanted))
    if unexpected:
        raise WeightsError(f"checkpoint holds parameters the model does not have: {unexpected[:10]}")
    return check_against_schema({wanted[key]: value for key, value in params.items()}, schema)


def check_against_schema(params: Mapping[str, np.ndarray], schema: Mapping[str, Shape]) -> dict[str, np.ndarray]:
    """Return ``params`` as a dict after checking names and shapes against ``schema``.

    Raises:
        WeightsError: naming the first missing, unexpected or mis-shaped parameter with
            the expected and the found shape.
    """
    missing = [name for name in schema if name not in params]
    if missing:
        raise WeightsError(f"missing parameters {missing[:10]} ({len(missing)} in all)")
    unexpected = sorted(set(params) - set(schema))
    if unexpected:
        raise WeightsError(f"unexpected parameters {unexpected[:10]} ({len(unexpected)} in all)")
    for name, shape in schema.items():
        found = tuple(np.shape(params[name]))
        if found != tuple(shape):
            raise WeightsError(f"parameter {name!r} should have shape {list(shape)}, found {list(found)}")
    return dict(params)
