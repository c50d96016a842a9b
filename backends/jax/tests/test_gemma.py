"""Gemma building blocks on small random weights: norms, RoPE, attention, the KV cache."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from openpi_backend_jax.gemma import (
    MASKED_LOGIT,
    AdaptiveRMSNorm,
    Gemma,
    RMSNorm,
    apply_rope,
    attend,
    transformer,
)
from openpi_backend_jax.pi0 import attention_mask, positions
from openpi_core.models.config import GemmaConfig

RNG = np.random.default_rng(0)
SMALL = GemmaConfig(width=32, depth=2, mlp_dim=48, num_heads=4, num_kv_heads=1, head_dim=8)


def test_rms_norm_scale_is_an_offset_from_one():
    x = RNG.standard_normal((5, 32), np.float32)
    norm = eqx.tree_at(lambda n: n.scale, RMSNorm(32), jnp.full((32,), 0.5))
    y, gate = norm(x)
    xn = np.asarray(x, np.float64)
    want = xn / np.sqrt(np.mean(xn**2, axis=-1, keepdims=True) + 1e-6) * 1.5
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-6)
    assert gate is None


def test_rms_norm_keeps_bfloat16_and_computes_in_float32():
    x = jnp.asarray(RNG.standard_normal((3, 32)) * 100, jnp.bfloat16)
    y, _ = RMSNorm(32)(x)
    assert y.dtype == jnp.bfloat16
    xf = np.asarray(x, np.float32)
    want = xf / np.sqrt(np.mean(xf**2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=1e-2)


def test_adaptive_norm_splits_scale_shift_gate(random_module):
    norm = random_module(AdaptiveRMSNorm, 8)
    x = RNG.standard_normal((3, 8), np.float32)
    cond = RNG.standard_normal(8, np.float32)
    y, gate = norm(x, cond)
    mod = np.asarray(cond) @ np.asarray(norm.modulation.kernel) + np.asarray(norm.modulation.bias)
    scale, shift, want_gate = np.split(mod, 3)
    xn = np.asarray(x)
    normed = xn / np.sqrt(np.mean(xn**2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(y), normed * (1 + scale) + shift, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gate), want_gate, rtol=1e-6, atol=1e-6)


def test_rope_is_identity_at_zero_and_relative():
    q = RNG.standard_normal((1, 2, 16), np.float32)
    k = RNG.standard_normal((1, 2, 16), np.float32)
    np.testing.assert_allclose(apply_rope(q, jnp.array([0])), q, atol=1e-7)

    def score(m: int, n: int) -> np.ndarray:
        return np.sum(np.asarray(apply_rope(q, jnp.array([m])) * apply_rope(k, jnp.array([n]))), axis=-1)

    np.testing.assert_allclose(score(7, 3), score(104, 100), rtol=1e-4, atol=1e-5)


def test_rope_rotates_halves_not_pairs():
    x = jnp.zeros((1, 1, 4)).at[0, 0, 0].set(1.0)  # unit vector on the first half's first axis
    y = np.asarray(apply_rope(x, jnp.array([1])))[0, 0]
    # Half-split: dimension 0 pairs with dimension 2 (= 0 + head_dim/2), at frequency 1.
    np.testing.assert_allclose(y, [np.cos(1.0), 0.0, np.sin(1.0), 0.0], atol=1e-6)


def test_attend_ignores_masked_keys_and_survives_empty_rows():
    q = RNG.standard_normal((2, 4, 8), np.float32)
    k = RNG.standard_normal((3, 1, 8), np.float32)
    v = RNG.standard_normal((3, 1, 8), np.float32)
    mask = jnp.array([[True, True, False], [False, False, False]])
    attend_jit = jax.jit(attend)  # one compilation instead of a dozen eager dispatches
    out = attend_jit(q, k, v, mask)
    changed = attend_jit(q, k, np.where(np.arange(3)[:, None, None] == 2, 1e3, v), mask)
    np.testing.assert_allclose(out[0], changed[0], atol=1e-6)
    # A query with no valid key sees a uniform average (finite MASKED_LOGIT), not NaN.
    np.testing.assert_allclose(out[1], np.broadcast_to(v.mean(axis=0), (4, 8)), atol=1e-6)
    assert pytest.approx(-2.3819763e38) == MASKED_LOGIT


def test_attention_mask_and_positions_follow_cumulative_blocks():
    valid = jnp.array([True, True, False, True, True, True])
    starts = jnp.array([False, False, False, True, True, False])
    mask = np.asarray(attention_mask(valid, starts))
    assert mask[0, 1] and mask[1, 0]  # prefix is bidirectional
    assert not mask[:, 2].any() and not mask[2].any()  # padding is invisible and sees nothing
    assert not mask[1, 3] and mask[3, 1]  # later blocks see earlier ones, not the reverse
    assert mask[4, 5] and mask[5, 4] and not mask[3, 4]
    np.testing.assert_array_equal(positions(valid), [0, 1, 1, 2, 3, 4])


@pytest.fixture(scope="module")
def experts(random_module):
    return random_module(Gemma, SMALL, vocab_size=16, seed=0), random_module(Gemma, SMALL, adaptive_norms=True, seed=1)


def test_kv_cache_pass_equals_joint_pass(experts):
    rng = np.random.default_rng(0)
    prefix, suffix = rng.standard_normal((6, 32), np.float32), rng.standard_normal((3, 32), np.float32)
    cond = rng.standard_normal(32, np.float32)
    prefix_valid = np.array([True, True, False, True, True, False])
    valid = np.concatenate([prefix_valid, np.ones(3, bool)])
    starts = np.array([0] * 6 + [1, 0, 0], bool)

    @eqx.filter_jit  # one compilation for the three passes, instead of many eager dispatches
    def joint_and_cached(experts, prefix, suffix, cond):
        (joint_prefix, joint_suffix), _ = transformer(
            experts, [prefix, suffix], [None, cond], positions(valid), attention_mask(valid, starts)
        )
        (cached_prefix, none), kv_cache = transformer(
            experts, [prefix, None], [None, None], positions(prefix_valid), attention_mask(prefix_valid, starts[:6])
        )
        assert none is None
        assert kv_cache[0].shape == (SMALL.depth, 6, SMALL.num_kv_heads, SMALL.head_dim)
        suffix_mask = jnp.concatenate(
            [jnp.broadcast_to(prefix_valid, (3, 6)), attention_mask(jnp.ones(3, bool), starts[6:])], axis=-1
        )
        suffix_positions = positions(jnp.ones(3, bool), prefix_valid.sum())
        (_, cached_suffix), _ = transformer(
            experts, [None, suffix], [None, cond], suffix_positions, suffix_mask, kv_cache
        )
        return joint_prefix, joint_suffix, cached_prefix, cached_suffix

    joint_prefix, joint_suffix, cached_prefix, cached_suffix = joint_and_cached(experts, prefix, suffix, cond)
    # Padding rows attend to nothing valid and differ harmlessly; compare the real tokens.
    np.testing.assert_allclose(cached_prefix[prefix_valid], joint_prefix[prefix_valid], atol=1e-5)
    np.testing.assert_allclose(cached_suffix, joint_suffix, atol=1e-5)


def test_layer_stack_is_one_scan():
    """The traced program does not grow with depth (compile time neither)."""

    def program_size(depth: int) -> int:
        config = GemmaConfig(width=16, depth=depth, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=8)
        llm = eqx.filter_eval_shape(Gemma, config, key=jax.random.key(0))
        x = jax.ShapeDtypeStruct((4, 16), jnp.float32)
        mask = jnp.ones((4, 4), bool)
        jaxpr = jax.make_jaxpr(lambda e, x: transformer(e, [x, None], [None, None], jnp.arange(4), mask))((llm, llm), x)
        return len(jaxpr.jaxpr.eqns)

    assert program_size(2) == program_size(6)
