"""SigLIP pieces against their textbook definitions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from openpi_backend_jax.siglip import LayerNorm, MultiHeadAttention, PatchEmbed

RNG = np.random.default_rng(0)


def test_patch_embed_is_a_strided_valid_convolution(random_module):
    embed = random_module(PatchEmbed, (14, 14), 8)
    image = jnp.asarray(RNG.uniform(-1, 1, (56, 42, 3)), jnp.float32)
    conv = jax.lax.conv_general_dilated(
        image[None], embed.kernel, (14, 14), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]
    np.testing.assert_allclose(embed(image), conv.reshape(-1, 8) + embed.bias, atol=1e-5)


def test_layer_norm_matches_definition_and_keeps_dtype():
    norm = eqx.tree_at(lambda n: (n.scale, n.bias), LayerNorm(6), (jnp.full(6, 2.0), jnp.full(6, 0.5)))
    x = jnp.asarray(RNG.standard_normal((4, 6)) * 3 + 1, jnp.float32)
    xn = np.asarray(x, np.float64)
    want = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-6) * 2 + 0.5
    np.testing.assert_allclose(norm(x), want, atol=1e-5)
    assert norm(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_attention_matches_per_head_softmax(random_module):
    attn = random_module(MultiHeadAttention, 8, 2)
    x = jnp.asarray(RNG.standard_normal((5, 8)), jnp.float32)
    xn = np.asarray(x, np.float64)

    def proj(p):
        return np.einsum("tw,wnh->tnh", xn, np.asarray(p.kernel)) + np.asarray(p.bias)

    q, k, v = proj(attn.query), proj(attn.key), proj(attn.value)
    logits = np.einsum("tnh,snh->nts", q, k) / np.sqrt(4)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    heads = np.einsum("nts,snh->tnh", probs, v)
    want = np.einsum("tnh,nhw->tw", heads, np.asarray(attn.out.kernel)) + np.asarray(attn.out.bias)
    np.testing.assert_allclose(eqx.filter_jit(attn)(x), want, atol=1e-5)
