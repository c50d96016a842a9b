"""Registration, lazy torch import, loading through the checkpoint formats, and one prefix pass."""

import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch

from openpi_backend_torch import TorchBackend
from openpi_backend_torch.precision import exact_float32
from openpi_core.errors import InputError


def test_plugin_and_backend_import_without_torch():
    code = "import sys, openpi_backend_torch.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_registers_the_backend():
    from openpi_backend_torch import plugin

    registered = []
    plugin.openpi_register_backends(registered.append)
    (backend,) = registered
    assert isinstance(backend, TorchBackend)
    assert backend.name == "torch" and backend.families == ("pi0", "pi05", "pi0_fast")


@pytest.mark.parametrize("source", ["openpi_params_path", "torch_state_path"])
def test_load_model_from_reference_checkpoints(case, source):
    model = TorchBackend().load_model(getattr(case.ref, source), case.ref.config)
    actions = model.sample_actions(case.ref.observation(), noise=case.ref.io["inputs/noise"], num_steps=1)
    np.testing.assert_allclose(actions, case.ref.io["outputs/actions_num_steps_1"], rtol=0, atol=1e-5)


def test_load_model_from_canonical_mapping(case):
    model = TorchBackend().load_model(case.params, case.ref.config)
    np.testing.assert_array_equal(model.state_dict()["vision.pos_embed"], case.params["vision.pos_embed"])


def test_load_model_rejects_other_families(monkeypatch):
    from openpi_core import checkpoints

    @attrs.frozen
    class OtherConfig:
        family: str = "pi1"

    monkeypatch.setattr(checkpoints, "load_checkpoint", lambda params, config: (OtherConfig(), params))
    with pytest.raises(InputError, match="pi1"):
        TorchBackend().load_model({}, None)


def test_sampling_runs_the_prefix_once(case, monkeypatch):
    """The prefix goes through SigLIP and the LLM once; each step runs the expert alone."""
    module = case.model.module
    vision_calls, gemma_calls = [], []
    vision_forward, gemma_forward = module.vision.forward, module.gemma.forward

    def count_vision(images):
        vision_calls.append(images.shape)
        return vision_forward(images)

    def count_gemma(xs, *args, **kwargs):
        gemma_calls.append([x is not None for x in xs])
        return gemma_forward(xs, *args, **kwargs)

    monkeypatch.setattr(module.vision, "forward", count_vision)
    monkeypatch.setattr(module.gemma, "forward", count_gemma)
    case.model.sample_actions(case.ref.observation(), noise=case.ref.io["inputs/noise"], num_steps=4)
    assert len(vision_calls) == 1
    assert gemma_calls == [[True, False]] + [[False, True]] * 4


def test_exact_float32_sets_ieee_and_restores():
    saved = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    try:
        with exact_float32():
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
            assert not torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        torch.backends.cudnn.conv.fp32_precision = saved
