"""float32 parity with openpi's own JAX models on the recorded reference fixtures.

Every output of ``io.safetensors`` is compared at 1e-5 absolute (the reference
README's suggested tolerance; measured differences are ~1e-6), masks and
positions exactly, for both π0 and π0.5.
"""

import numpy as np
import pytest

from openpi_backend_jax.pi0 import positions

ATOL = 1e-5
IMAGE_TOKENS = 256


def assert_close(what: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol:g}"


@pytest.fixture(scope="module")
def prefix(model, reference):
    return model.embed_prefix(reference.observation())


def test_prefix_image_tokens(prefix, reference):
    tokens, _, _ = prefix
    want = reference.io["outputs/prefix_tokens_base0_and_lang"][:, :IMAGE_TOKENS]
    assert_close("base_0_rgb image tokens", tokens[:, :IMAGE_TOKENS], want)


def test_prefix_language_tokens(prefix, reference):
    tokens, _, _ = prefix
    cameras = len(reference.config.image_keys)
    want = reference.io["outputs/prefix_tokens_base0_and_lang"][:, IMAGE_TOKENS:]
    start = cameras * IMAGE_TOKENS
    assert_close("language tokens", tokens[:, start : start + want.shape[1]], want)


def test_prefix_masks_and_positions(prefix, reference):
    tokens, mask, ar = prefix
    io = reference.io
    assert tokens.shape[1] == io["outputs/prefix_mask"].shape[1]
    np.testing.assert_array_equal(mask, io["outputs/prefix_mask"].astype(bool))
    np.testing.assert_array_equal(ar, io["outputs/prefix_ar_mask"].astype(bool))
    np.testing.assert_array_equal(np.asarray(positions(mask)), io["outputs/prefix_positions"])


def test_suffix_at_t1(model, reference):
    io, batch = reference.io, reference.observation().batch_size
    tokens, mask, ar, cond = model.embed_suffix(reference.observation(), io["inputs/noise"], np.ones(batch, np.float32))
    assert_close("suffix tokens", tokens, io["outputs/suffix_tokens_at_t1"])
    np.testing.assert_array_equal(mask, io["outputs/suffix_mask"].astype(bool))
    np.testing.assert_array_equal(ar, io["outputs/suffix_ar_mask"].astype(bool))
    offset = io["outputs/prefix_mask"].sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(np.asarray(positions(mask, offset)), io["outputs/suffix_positions"])
    if reference.config.pi05:
        assert_close("adaRMS condition", cond, io["outputs/adarms_cond_at_t1"])
    else:
        assert cond is None


def test_velocity_at_t1(model, reference):
    io, batch = reference.io, reference.observation().batch_size
    v = model.velocity(reference.observation(), io["inputs/noise"], np.ones(batch, np.float32))
    assert_close("v_t at t=1", v, io["outputs/v_t_at_t1"])


@pytest.mark.parametrize("num_steps", [10, 1])
def test_sample_actions(model, reference, num_steps):
    io = reference.io
    name = "outputs/actions" if num_steps == 10 else f"outputs/actions_num_steps_{num_steps}"
    assert reference.recorded_num_steps()[name] == num_steps
    actions = model.sample_actions(reference.observation(), noise=io["inputs/noise"], num_steps=num_steps)
    assert actions.dtype == np.float32
    assert_close(f"actions ({num_steps} steps)", actions, io[name])


def test_loss(model, reference):
    io = reference.io
    loss = model.compute_loss(reference.observation(), io["loss/actions"], io["loss/noise"], io["loss/time"])
    assert_close("loss", loss, io["loss/loss"])
