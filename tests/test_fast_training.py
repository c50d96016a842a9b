"""π0-FAST trains in both backends: the loss falls, LoRA adapts the one Gemma, and the
action expert's LoRA is refused (π0-FAST has no action expert)."""

import numpy as np
import pytest

from openpi_conformance.fixtures import seeded_observation, seeded_params, tiny_pi0_fast_config
from openpi_core.errors import InputError
from openpi_core.models.pi0_weights import pi0_fast_weight_schema
from openpi_core.training.config import LoRAConfig, TrainConfig
from openpi_core.training.lora import init_lora

BACKENDS = ["jax", "torch"]
TRAIN = TrainConfig(exp_name="fast", precision="float32", ema_decay=None)
UNUSED = np.zeros((2, 1, 1), np.float32)
"""π0-FAST's targets are in the token sequence; the flow-matching arguments are unused."""


def _backend(name: str):
    return pytest.importorskip(f"openpi_backend_{name}.backend")


def _trainer(name: str, train: TrainConfig):
    config = tiny_pi0_fast_config()
    params = seeded_params(config) | init_lora(pi0_fast_weight_schema(config), train, train.seed)
    module = _backend(name)
    backend = module.JaxBackend() if name == "jax" else module.TorchBackend()
    return backend.create_trainer(config, train, params), params


def _step(trainer, observation, lr: float) -> dict[str, float]:
    return trainer.step(observation, UNUSED, UNUSED, np.zeros(2, np.float32), lr)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_next_token_loss_falls_fivefold_on_a_fixed_batch(backend):
    trainer, _ = _trainer(backend, TRAIN)
    observation = seeded_observation(tiny_pi0_fast_config())
    losses = [_step(trainer, observation, 3e-3)["loss"] for _ in range(30)]
    assert losses[0] / losses[-1] >= 5.0, losses


@pytest.mark.parametrize("backend", BACKENDS)
def test_llm_lora_trains_the_adapters_and_leaves_the_gemma_frozen(backend):
    train = TrainConfig(exp_name="fast", precision="float32", ema_decay=None, llm_lora=LoRAConfig(rank=2, alpha=4.0))
    trainer, params = _trainer(backend, train)
    _step(trainer, seeded_observation(tiny_pi0_fast_config()), 1e-2)
    state = trainer.state_dict()
    assert "params/llm.layers.attn.q_proj.lora_a" in state
    np.testing.assert_array_equal(state["params/llm.layers.attn.q_proj"], params["llm.layers.attn.q_proj"])
    assert not np.array_equal(state["params/llm.layers.attn.q_proj.lora_b"], params["llm.layers.attn.q_proj.lora_b"])
    assert not np.array_equal(state["params/vision.head.kernel"], params["vision.head.kernel"])
    assert set(trainer.inference_params()) == set(pi0_fast_weight_schema(tiny_pi0_fast_config()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_expert_lora_is_refused_for_a_model_without_an_action_expert(backend):
    train = TrainConfig(exp_name="fast", expert_lora=LoRAConfig(rank=2, alpha=2.0))
    with pytest.raises(InputError, match=r"expert_lora .* no 'expert' weights"):
        _trainer(backend, train)
