"""Every installed embodiment keeps the contract its transforms promise."""

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.plugins import get_embodiment
from openpi_core.schema import flatten_dict, unflatten_dict
from openpi_core.transforms import compose

FAMILIES = ("pi0", "pi05", "pi0_fast")
MODEL_ACTION_DIM = 32
HORIZON = 5


@pytest.mark.parametrize("family", FAMILIES)
def test_example_goes_through_the_input_and_output_transforms(embodiment_name, family):
    embodiment = get_embodiment(embodiment_name)
    example = embodiment.example(seed=0)
    embodiment.validate(example)
    group = embodiment.transforms(family)
    model_input = compose(group.inputs)(example)
    assert set(model_input["image"]) == set(model_input["image_mask"]), "every image needs a mask"
    for key, image in model_input["image"].items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, f"image {key}: {image.shape}"
    state = np.asarray(model_input["state"])
    assert state.ndim == 1 and np.all(np.isfinite(state))
    actions = np.random.default_rng(0).normal(size=(HORIZON, MODEL_ACTION_DIM)).astype(np.float32)
    robot_actions = compose(group.outputs)({"actions": actions})["actions"]
    assert robot_actions.shape == (HORIZON, embodiment.action_dim)


def test_examples_are_deterministic(embodiment_name):
    embodiment = get_embodiment(embodiment_name)
    first, second = flatten_dict(embodiment.example(seed=5)), flatten_dict(embodiment.example(seed=5))
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(np.asarray(first[key]), np.asarray(second[key])), key


def test_nan_state_is_rejected_with_the_key_named(embodiment_name):
    embodiment = get_embodiment(embodiment_name)
    example = flatten_dict(embodiment.example(seed=0))
    float_keys = [
        key
        for key, spec in embodiment.observation_schema.items()
        if "f" in spec.dtype_kind and spec.finite and key in example and np.asarray(example[key]).dtype.kind == "f"
    ]
    assert float_keys, "the schema should declare at least one finite float array (the state)"
    key = float_keys[0]
    broken = np.array(example[key], dtype=np.float32, copy=True)
    broken.reshape(-1)[0] = np.nan
    example[key] = broken
    with pytest.raises(InputError, match=key.rsplit("/", 1)[-1]):
        embodiment.validate(unflatten_dict(example))
