"""Observation and Actions: conversion, validation, dict round trip."""

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.observation import Actions, Observation


def batch(b: int = 2) -> dict:
    return {
        "image": {
            "base_0_rgb": np.zeros((b, 4, 4, 3), np.uint8),
            "left_wrist_0_rgb": np.full((b, 4, 4, 3), 255, np.uint8),
        },
        "image_mask": {"base_0_rgb": np.ones(b, bool), "left_wrist_0_rgb": np.array([True, False][:b])},
        "state": np.ones((b, 5)),
        "tokenized_prompt": np.arange(2 * b).reshape(b, 2),
        "tokenized_prompt_mask": np.ones((b, 2)),
    }


def test_uint8_images_become_float_in_minus_one_to_one():
    observation = Observation.from_dict(batch())
    assert observation.images["base_0_rgb"].dtype == np.float32
    assert observation.images["base_0_rgb"].max() == -1.0
    assert observation.images["left_wrist_0_rgb"].min() == 1.0
    assert observation.tokenized_prompt.dtype == np.int32
    assert observation.tokenized_prompt_mask.dtype == bool
    assert observation.batch_size == 2


def test_to_dict_round_trip_keeps_values_and_drops_absent_fields():
    observation = Observation.from_dict(batch())
    data = observation.to_dict()
    assert "token_ar_mask" not in data
    again = Observation.from_dict(data)
    np.testing.assert_array_equal(again.images["left_wrist_0_rgb"], observation.images["left_wrist_0_rgb"])
    np.testing.assert_array_equal(again.image_masks["left_wrist_0_rgb"], [True, False])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["image"].update(base_0_rgb=np.zeros((2, 4, 4, 1), np.uint8)), "images['base_0_rgb']"),
        (lambda d: d["image_mask"].pop("left_wrist_0_rgb"), "image_masks"),
        (lambda d: d.update(state=np.ones(5)), "state should be [B, S]"),
        (lambda d: d.update(tokenized_prompt_mask=np.ones((2, 3))), "tokenized_prompt_mask"),
        (lambda d: d.pop("tokenized_prompt_mask"), "tokenized_prompt_mask"),
        (lambda d: d["image_mask"].update(base_0_rgb=np.ones(3, bool)), "image_masks['base_0_rgb']"),
    ],
)
def test_bad_shapes_name_the_field(change, message):
    data = batch()
    change(data)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Observation.from_dict(data)


def test_missing_top_level_key_lists_what_came():
    data = batch()
    del data["state"]
    with pytest.raises(InputError, match=r"missing \['state'\]"):
        Observation.from_dict(data)


def test_actions_validate_rank_and_finiteness():
    assert Actions(np.zeros((1, 10, 7))).horizon == 10
    with pytest.raises(InputError, match=r"\[B, H, A\]"):
        Actions(np.zeros((10, 7)))
    with pytest.raises(InputError, match="finite"):
        Actions(np.full((1, 2, 3), np.nan))
