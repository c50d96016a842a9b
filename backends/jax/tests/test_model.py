"""The model's contract beyond reference parity: weights round trip, errors,
compile-once sampling, bfloat16, gradients and registration."""

import subprocess
import sys

import attrs
import equinox as eqx
import numpy as np
import pytest

from openpi_backend_jax import pi0
from openpi_backend_jax.backend import JaxBackend
from openpi_backend_jax.pi0 import Pi0Model
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.api import draw_noise
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.observation import Observation

BF16_ACTION_ATOL = 0.05
"""bfloat16-vs-float32 bound on sampled actions (10 steps) of the tiny reference
models, whose actions span about ±5. Measured: 0.025 (π0) and 0.011 (π0.5)."""


def _replace(observation: Observation, **changes) -> Observation:
    return attrs.evolve(observation, **changes)


def test_state_dict_round_trip_is_bit_identical(model, canonical_params, family):
    state = model.state_dict()
    params = canonical_params[family]
    assert set(state) == set(params) == set(pi0_weight_schema(model.config))
    for name, value in params.items():
        assert state[name].dtype == np.float32
        np.testing.assert_array_equal(state[name], value, err_msg=name)


def test_bfloat16_state_dict_round_trip(bf16_models, family):
    state = bf16_models[family].state_dict()
    again = Pi0Model.from_params(bf16_models[family].config, state).state_dict()
    for name, value in state.items():
        assert value.dtype.name == "bfloat16"
        np.testing.assert_array_equal(again[name].view(np.uint16), value.view(np.uint16), err_msg=name)


def test_weights_errors_name_the_parameter(reference, canonical_params, family):
    params = dict(canonical_params[family])
    missing = {k: v for k, v in params.items() if k != "action_in_proj.bias"}
    with pytest.raises(WeightsError, match=r"action_in_proj\.bias"):
        Pi0Model.from_params(reference.config, missing)
    with pytest.raises(WeightsError, match=r"llm.embedding.*\[1024, 64\]"):
        Pi0Model.from_params(reference.config, {**params, "llm.embedding": np.zeros((3, 64), np.float32)})
    with pytest.raises(WeightsError, match="surplus"):
        Pi0Model.from_params(reference.config, {**params, "surplus": np.zeros(1, np.float32)})
    with pytest.raises(WeightsError, match="NaN"):
        Pi0Model.from_params(reference.config, {**params, "action_out_proj.bias": np.full(32, np.nan, np.float32)})


def test_input_errors(model, reference):
    obs = reference.observation()
    images, masks = dict(obs.images), dict(obs.image_masks)
    first = model.config.image_keys[0]
    images["wrong_key"], masks["wrong_key"] = images.pop(first), masks.pop(first)
    with pytest.raises(InputError, match=first):
        model.sample_actions(_replace(obs, images=images, image_masks=masks))
    small = {k: v[:, :112, :112] for k, v in obs.images.items()}
    with pytest.raises(InputError, match=r"\[2, 224, 224, 3\]"):
        model.embed_prefix(_replace(obs, images=small))
    with pytest.raises(InputError, match="noise"):
        model.sample_actions(obs, noise=np.zeros((2, 3, 32), np.float32))
    with pytest.raises(InputError, match="time"):
        model.compute_loss(obs, reference.io["loss/actions"], time=np.ones(3, np.float32))
    if not model.config.pi05:  # π0.5 ignores the continuous state
        with pytest.raises(InputError, match="state"):
            model.sample_actions(_replace(obs, state=obs.state[:, :7]))


def test_sampler_compiles_once_per_shape(model, reference):
    obs, io = reference.observation(), reference.io
    before = eqx.debug.get_num_traces(pi0.sample_actions)
    first = model.sample_actions(obs, noise=io["inputs/noise"])
    traced = eqx.debug.get_num_traces(pi0.sample_actions)
    assert traced - before <= 1
    rng = np.random.default_rng(0)
    for num_steps in (3, 1, 10):
        images = {k: np.clip(v + rng.normal(0, 0.1, v.shape), -1, 1) for k, v in obs.images.items()}
        other = _replace(obs, images=images, state=rng.normal(size=obs.state.shape))
        actions = model.sample_actions(
            other, noise=rng.normal(size=first.shape).astype(np.float32), num_steps=num_steps
        )
        assert actions.shape == first.shape and np.all(np.isfinite(actions))
    assert eqx.debug.get_num_traces(pi0.sample_actions) == traced


def test_default_noise_comes_from_the_seed(model, reference):
    obs = reference.observation()
    shape = (obs.batch_size, model.config.action_horizon, model.config.action_dim)
    np.testing.assert_array_equal(
        model.sample_actions(obs, num_steps=2, seed=5),
        model.sample_actions(obs, noise=draw_noise(5, shape), num_steps=2),
    )


def test_bfloat16_is_close_to_float32(bf16_models, reference, family):
    model, io, obs = bf16_models[family], reference.io, reference.observation()
    assert model.module.llm.layers.attn.q_proj.dtype.name == "bfloat16"
    actions = model.sample_actions(obs, noise=io["inputs/noise"])
    assert actions.dtype == np.float32
    np.testing.assert_allclose(actions, io["outputs/actions"], atol=BF16_ACTION_ATOL, rtol=0)


def test_loss_gradients(model, reference):
    io, config = reference.io, model.config
    actions, noise, time = io["loss/actions"], io["loss/noise"], io["loss/time"]
    loss, grads = model.loss_gradients(reference.observation(), actions, noise, time)
    np.testing.assert_allclose(loss, io["loss/loss"], atol=1e-5)
    schema = pi0_weight_schema(config)
    assert set(grads) == set(schema)
    for name, grad in grads.items():
        assert grad.dtype == np.float32 and grad.shape == schema[name], name
        assert np.all(np.isfinite(grad)), name
    # d mean(loss) / d action_out_proj.bias = 2/A * mean over (batch, horizon) of (v_t - u_t).
    want = 2.0 / config.action_dim * np.mean(io["loss/v_t"] - (noise - actions), axis=(0, 1))
    np.testing.assert_allclose(grads["action_out_proj.bias"], want, atol=1e-6)
    assert np.abs(grads["vision.patch_embed.kernel"]).max() > 0  # the gradient reaches the vision tower


@pytest.mark.parametrize("source", ["canonical", "openpi_params_path", "orbax_params_path", "torch_state_path"])
def test_backend_loads_every_reference_format(reference, canonical_params, family, source):
    params = canonical_params[family]
    model = JaxBackend().load_model(params if source == "canonical" else getattr(reference, source), reference.config)
    assert isinstance(model, Pi0Model) and model.config.family == family
    state = model.state_dict()
    assert all(np.array_equal(state[name], value) for name, value in params.items())


def test_plugin_registers_without_importing_jax():
    code = (
        "import sys; from openpi_core.plugins import PluginManager; import openpi_backend_jax.plugin as p; "
        "pm = PluginManager(entry_points=False, plugins=[('jax', p)]); pm.load(); "
        "b = pm.registry('backend').get('jax'); assert b.families == ('pi0', 'pi05', 'pi0_fast'), b.families; "
        "assert not any(m.split('.')[0] in ('jax', 'equinox') for m in sys.modules), 'jax imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
