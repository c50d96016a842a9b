"""Float32 parity with openpi's JAX reference, within the suggested 1e-5, for π0 and π0.5."""

import numpy as np
import pytest
import torch

from openpi_backend_torch.pi0 import make_attn_mask, positions_from_mask

ATOL = 1e-5
PATCHES = 256


def assert_close(actual, expected, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=atol)


def test_prefix_embeddings_image_and_language(case):
    tokens, _, _ = case.model.embed_prefix(case.ref.observation())
    expected = case.ref.io["outputs/prefix_tokens_base0_and_lang"]
    image_tokens = len(case.ref.config.image_keys) * PATCHES
    assert_close(tokens[:, :PATCHES], expected[:, :PATCHES])
    assert_close(tokens[:, image_tokens:], expected[:, PATCHES:])


def test_prefix_masks_and_positions(case):
    io = case.ref.io
    _, valid, ar = case.model.embed_prefix(case.ref.observation())
    np.testing.assert_array_equal(valid, io["outputs/prefix_mask"].astype(bool))
    np.testing.assert_array_equal(ar, io["outputs/prefix_ar_mask"].astype(bool))
    np.testing.assert_array_equal(positions_from_mask(torch.from_numpy(valid)).numpy(), io["outputs/prefix_positions"])


def test_suffix_tokens_masks_and_positions_at_t1(case):
    io, module = case.ref.io, case.model.module
    inputs = case.model._inputs(case.ref.observation())
    with torch.inference_mode():
        tokens, valid, ar, cond = module.embed_suffix(inputs.state, torch.from_numpy(io["inputs/noise"]), torch.ones(2))
        cache = module.fill_cache(*module.embed_prefix(inputs), inputs.state)
    assert_close(tokens, io["outputs/suffix_tokens_at_t1"])
    np.testing.assert_array_equal(valid.numpy(), io["outputs/suffix_mask"].astype(bool))
    np.testing.assert_array_equal(ar.numpy(), io["outputs/suffix_ar_mask"])
    np.testing.assert_array_equal(cache.positions.numpy(), io["outputs/suffix_positions"])
    if case.ref.config.pi05:
        assert_close(cond, io["outputs/adarms_cond_at_t1"])
    else:
        assert cond is None


def test_cached_suffix_mask_is_the_joint_mask_restricted_to_suffix_queries(case):
    io, module = case.ref.io, case.model.module
    inputs = case.model._inputs(case.ref.observation())
    with torch.inference_mode():
        cache = module.fill_cache(*module.embed_prefix(inputs), inputs.state)
    valid = torch.from_numpy(
        np.concatenate([io["outputs/prefix_mask"], io["outputs/suffix_mask"]], axis=1).astype(bool)
    )
    ar = torch.from_numpy(np.concatenate([io["outputs/prefix_ar_mask"], io["outputs/suffix_ar_mask"]]))
    suffix_len = io["outputs/suffix_mask"].shape[1]
    torch.testing.assert_close(cache.mask, make_attn_mask(valid, ar)[:, -suffix_len:])


def test_velocity_at_t1_through_the_kv_cache(case):
    io = case.ref.io
    velocity = case.model.velocity(case.ref.observation(), io["inputs/noise"], np.ones(2, np.float32))
    assert_close(velocity, io["outputs/v_t_at_t1"])


@pytest.mark.parametrize("output", ["outputs/actions", "outputs/actions_num_steps_1"])
def test_sampled_actions(case, output):
    num_steps = case.ref.recorded_num_steps()[output]
    actions = case.model.sample_actions(case.ref.observation(), noise=case.ref.io["inputs/noise"], num_steps=num_steps)
    assert actions.dtype == np.float32
    assert_close(actions, case.ref.io[output])


def test_loss_with_recorded_noise_and_time(case):
    io = case.ref.io
    loss = case.model.compute_loss(case.ref.observation(), io["loss/actions"], io["loss/noise"], io["loss/time"])
    assert loss.shape == io["loss/loss"].shape
    assert_close(loss, io["loss/loss"])


def test_kv_cache_velocity_equals_the_joint_forward(case):
    """The cached denoising step computes what the training-time joint pass computes."""
    io = case.ref.io
    observation = case.ref.observation()
    t = io["loss/time"][:, None, None]
    x_t = t * io["loss/noise"] + (1 - t) * io["loss/actions"]
    cached = case.model.velocity(observation, x_t, io["loss/time"])
    with torch.inference_mode():
        joint = case.model.module.full_velocity(
            case.model._inputs(observation), torch.from_numpy(x_t), torch.from_numpy(io["loss/time"])
        )
    assert_close(cached, joint.numpy(), atol=2e-6)
    assert_close(cached, io["loss/v_t"])
