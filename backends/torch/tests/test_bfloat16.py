"""The bfloat16 fast path: bf16 weights and matmuls, float32 islands, actions near float32's.

Measured on the tiny reference models (10 steps, |actions| up to ~4.8): max abs
difference to the float32 reference 0.019 (π0) and 0.012 (π0.5), mean 0.004 and
0.002. The asserted bounds leave about 2.5x headroom.
"""

import attrs
import numpy as np
import pytest
import torch

from openpi_backend_torch.pi0 import Pi0Model

BF16_ACTIONS_MAX_ABS = 0.05
BF16_ACTIONS_MEAN_ABS = 0.01


@pytest.fixture(scope="module")
def bf16_model(case):
    return Pi0Model.from_params(attrs.evolve(case.ref.config, dtype="bfloat16"), case.params)


def test_bf16_actions_are_close_to_float32(case, bf16_model):
    io = case.ref.io
    actions = bf16_model.sample_actions(case.ref.observation(), noise=io["inputs/noise"])
    assert actions.dtype == np.float32
    error = np.abs(actions - io["outputs/actions"])
    assert error.max() < BF16_ACTIONS_MAX_ABS
    assert error.mean() < BF16_ACTIONS_MEAN_ABS


def test_bf16_weights_and_float32_islands(bf16_model):
    module = bf16_model.module
    assert module.gemma.layers[0].experts[0].qkv.weight.dtype == torch.bfloat16
    assert module.gemma.embedding.weight.dtype == torch.bfloat16
    assert module.vision.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    float32 = [
        module.gemma.layers[0].experts[0].attn_norm.scale,
        module.vision.patch_embed.weight,
        module.vision.pos_embed,
        module.vision.final_norm.weight,
        module.action_out_proj.weight,
    ]
    assert all(p.dtype == torch.float32 for p in float32)


def test_bf16_state_dict_is_float32_and_rounds_like_bfloat16(case, bf16_model):
    exported = bf16_model.state_dict()
    kernel = case.params["llm.layers.attn.q_proj"]
    rounded = torch.from_numpy(kernel).to(torch.bfloat16).float().numpy()
    assert exported["llm.layers.attn.q_proj"].dtype == np.float32
    np.testing.assert_array_equal(exported["llm.layers.attn.q_proj"], rounded)
    np.testing.assert_array_equal(exported["llm.layers.attn_norm.scale"], case.params["llm.layers.attn_norm.scale"])
