"""Canonical parameters in and out: exact round trip, clear errors, gradients by canonical name."""

import numpy as np
import pytest
import torch

from openpi_backend_torch.pi0 import Pi0Model
from openpi_core.errors import WeightsError
from openpi_core.models.pi0_weights import pi0_weight_schema


def test_state_dict_round_trip_is_bit_identical(case):
    exported = case.model.state_dict()
    assert set(exported) == set(case.params)
    for name, value in case.params.items():
        assert exported[name].dtype == np.float32, name
        np.testing.assert_array_equal(exported[name], value, err_msg=name, strict=True)
    # And the export loads back into the same model.
    reloaded = Pi0Model.from_params(case.ref.config, exported).state_dict()
    assert all(np.array_equal(reloaded[name], value) for name, value in exported.items())


def test_every_module_parameter_is_filled_and_aliases_no_input(case):
    params = dict(case.model.module.named_parameters())
    assert not any(p.is_meta for p in params.values())
    # The model owns its weights: writing into the caller's arrays afterwards changes nothing.
    params = {name: value.copy() for name, value in case.params.items()}
    model = Pi0Model.from_params(case.ref.config, params)
    for value in params.values():
        value[...] = 0
    np.testing.assert_array_equal(model.state_dict()["llm.embedding"], case.params["llm.embedding"])


def test_missing_parameter_is_a_weights_error(case):
    params = dict(case.params)
    del params["expert.layers.attn.o_proj"]
    with pytest.raises(WeightsError, match=r"expert\.layers\.attn\.o_proj"):
        Pi0Model.from_params(case.ref.config, params)


def test_unexpected_parameter_is_a_weights_error(case):
    params = {**case.params, "expert.lm_head": np.zeros((2, 2), np.float32)}
    with pytest.raises(WeightsError, match="lm_head"):
        Pi0Model.from_params(case.ref.config, params)


def test_misshaped_parameter_is_a_weights_error(case):
    params = {**case.params, "action_in_proj.kernel": case.params["action_in_proj.kernel"].T}
    with pytest.raises(WeightsError, match=r"action_in_proj\.kernel.*shape"):
        Pi0Model.from_params(case.ref.config, params)


def test_non_finite_parameter_is_a_weights_error(case):
    bad = case.params["vision.head.bias"].copy()
    bad[0] = np.nan
    with pytest.raises(WeightsError, match=r"vision\.head\.bias"):
        Pi0Model.from_params(case.ref.config, {**case.params, "vision.head.bias": bad})


@pytest.fixture(scope="module")
def gradients(case):
    io = case.ref.io
    args = (case.ref.observation(), io["loss/actions"], io["loss/noise"], io["loss/time"])
    return args, case.model.loss_gradients(*args)


def test_gradients_are_named_and_shaped_canonically(case, gradients):
    loss, grads = gradients[1]
    schema = pi0_weight_schema(case.ref.config)
    assert set(grads) == set(schema)
    for name, shape in schema.items():
        assert grads[name].shape == shape and grads[name].dtype == np.float32, name
        assert np.all(np.isfinite(grads[name])), name
    np.testing.assert_allclose(loss, case.ref.io["loss/loss"], rtol=0, atol=1e-5)
    # The LLM's final norm only shapes prefix outputs, which the loss never reads.
    assert not np.any(grads["llm.final_norm.scale"])
    assert np.any(grads["expert.layers.attn.q_proj"]) and np.any(grads["vision.patch_embed.kernel"])


def test_gradients_match_a_central_difference(case, gradients):
    """d/dh mean_loss(params + h·direction) at h=0 equals <grad, direction>."""
    args, (_, grads) = gradients
    rng = np.random.default_rng(0)
    direction = {name: rng.standard_normal(value.shape).astype(np.float32) for name, value in case.params.items()}
    h = 3e-4  # small enough for the curvature, large enough for float32 rounding

    def mean_loss(sign: float) -> float:
        shifted = {name: value + sign * h * direction[name] for name, value in case.params.items()}
        return float(Pi0Model.from_params(case.ref.config, shifted).compute_loss(*args).astype(np.float64).mean())

    numeric = (mean_loss(1.0) - mean_loss(-1.0)) / (2 * h)
    analytic = sum(float(np.vdot(grads[name].astype(np.float64), direction[name])) for name in grads)
    assert numeric == pytest.approx(analytic, rel=3e-3)


def test_module_rules_cover_every_module_parameter(case):
    from openpi_backend_torch.weights import module_arrays

    converted = dict(module_arrays(case.ref.config, case.params))
    module_params = dict(case.model.module.named_parameters())
    assert set(converted) == set(module_params)
    assert all(tuple(converted[n].shape) == tuple(p.shape) for n, p in module_params.items())
    assert torch.float32 in {p.dtype for p in module_params.values()}
