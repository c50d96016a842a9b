"""Architecture configs of the π-family models, with openpi's named variants.

Every number is an explicit, overridable field; the named variants (``dummy``,
``gemma_300m``, ``gemma_2b``, ``So400m/14``) only fill them in. Configs are attrs
classes that :mod:`openpi_core.serialization` turns into plain dicts and back.
"""

from typing import Any

import attrs

from openpi_core.errors import InputError
from openpi_core.observation import IMAGE_RESOLUTION, PI0_FAST_IMAGE_KEYS, PI0_IMAGE_KEYS

PALIGEMMA_VOCAB_SIZE = 257_152
DTYPES = ("bfloat16", "float32")


@attrs.frozen
class GemmaConfig:
    """One Gemma transformer (the PaliGemma language model or the action expert)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@attrs.frozen
class SiglipConfig:
    """The SigLIP vision tower; its output goes through a Dense head to the LLM width."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: tuple[int, int] = attrs.field(default=(14, 14), converter=tuple)
    image_size: tuple[int, int] = attrs.field(default=IMAGE_RESOLUTION, converter=tuple)
    pool_type: str = "none"

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def num_patches(self) -> int:
        return (self.image_size[0] // self.patch_size[0]) * (self.image_size[1] // self.patch_size[1])


GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "dummy": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
}

SIGLIP_VARIANTS: dict[str, SiglipConfig] = {
    "So400m/14": SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16),
}


def gemma_variant(name: str) -> GemmaConfig:
    if name not in GEMMA_VARIANTS:
        raise InputError(f"unknown Gemma variant {name!r}; expected one of {sorted(GEMMA_VARIANTS)}")
    return GEMMA_VARIANTS[name]


def siglip_variant(name: str) -> SiglipConfig:
    if name not in SIGLIP_VARIANTS:
        raise InputError(f"unknown SigLIP variant {name!r}; expected one of {sorted(SIGLIP_VARIANTS)}")
    return SIGLIP_VARIANTS[name]


def _check_dtype(_instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in DTYPES:
        raise InputError(f"{attribute.name} should be one of {DTYPES}, got {value!r}")


@attrs.frozen
class Pi0Config:
    """π0 (``pi05=False``) or π0.5 (``pi05=True``).

    ``max_token_len`` defaults to 48 for π0 and 200 for π0.5, and
    ``discrete_state_input`` to ``pi05``, as in openpi. ``dtype`` is the compute
    dtype: ``bfloat16`` is the fast path, ``float32`` the parity ground truth.
    """

    llm: GemmaConfig = attrs.field(factory=lambda: GEMMA_VARIANTS["gemma_2b"])
    action_expert: GemmaConfig = attrs.field(factory=lambda: GEMMA_VARIANTS["gemma_300m"])
    vision: SiglipConfig = attrs.field(factory=lambda: SIGLIP_VARIANTS["So400m/14"])
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    pi05: bool = False
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = attrs.field(default=attrs.Factory(lambda self: 200 if self.pi05 else 48, takes_self=True))
    dtype: str = attrs.field(default="bfloat16", validator=_check_dtype)
    discrete_state_input: bool = attrs.field(default=attrs.Factory(lambda self: self.pi05, takes_self=True))
    image_keys: tuple[str, ...] = attrs.field(default=PI0_IMAGE_KEYS, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.llm.depth != self.action_expert.depth:
            raise InputError(
                f"the two experts share attention per layer, so their depths must match; "
                f"got llm depth {self.llm.depth} and action expert depth {self.action_expert.depth}"
            )
        for field in ("num_heads", "num_kv_heads", "head_dim"):
            if getattr(self.llm, field) != getattr(self.action_expert, field):
                raise InputError(
                    f"llm.{field} ({getattr(self.llm, field)}) must equal action_expert.{field} "
                    f"({getattr(self.action_expert, field)}): the experts attend jointly"
                )

    @property
    def family(self) -> str:
        return "pi05" if self.pi05 else "pi0"

    @classmethod
    def from_variants(
        cls,
        paligemma_variant: str = "gemma_2b",
        action_expert_variant: str = "gemma_300m",
        vision_variant: str = "So400m/14",
        **overrides: Any,
    ) -> "Pi0Config":
        """Build from openpi's variant names, with any field overridden."""
        return cls(
            llm=gemma_variant(paligemma_variant),
            action_expert=gemma_variant(action_expert_variant),
            vision=siglip_variant(vision_variant),
            **overrides,
        )


@attrs.frozen
class Pi0FASTConfig:
    """π0-FAST: one Gemma decoding FAST action tokens after a SigLIP + prompt prefix.

    ``max_decoding_steps`` bounds greedy or sampled decoding; ``eos_token`` stops it.
    ``fast_skip_tokens`` is how many ids at the very end of the PaliGemma vocabulary
    (special tokens) FAST action tokens stay clear of.

    ``decode_position_offset``: generated token ``s`` is fed at RoPE position
    ``prefill_len + s + decode_position_offset``. Training puts it at ``prefill_len + s``;
    openpi decodes one position further (offset 1, the default, as the published
    checkpoints are served). A small model trained from scratch is sensitive to that
    gap: give it 0 to decode at the positions it was trained at.
    """

    llm: GemmaConfig = attrs.field(factory=lambda: GEMMA_VARIANTS["gemma_2b"])
    vision: SiglipConfig = attrs.field(factory=lambda: SIGLIP_VARIANTS["So400m/14"])
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    action_dim: int = 32
    action_horizon: int = 32
    max_token_len: int = 250
    max_decoding_steps: int = 256
    eos_token: int = 1
    fast_skip_tokens: int = 128
    decode_position_offset: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    dtype: str = attrs.field(default="bfloat16", validator=_check_dtype)
    image_keys: tuple[str, ...] = attrs.field(default=PI0_FAST_IMAGE_KEYS, converter=tuple)

    @property
    def family(self) -> str:
        return "pi0_fast"

    @classmethod
    def from_variants(
        cls, paligemma_variant: str = "gemma_2b", vision_variant: str = "So400m/14", **overrides: Any
    ) -> "Pi0FASTConfig":
        """Build from openpi's variant names, with any field overridden."""
        return cls(llm=gemma_variant(paligemma_variant), vision=siglip_variant(vision_variant), **overrides)
