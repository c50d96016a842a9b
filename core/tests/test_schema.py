"""Schema validation: what it refuses, and that its messages stay short whatever came."""

import numpy as np
import pytest

from openpi_core.errors import InputError
from openpi_core.schema import ArraySpec, validate

SCHEMA = {"images/cam_high": ArraySpec((3, None, None), "uf"), "state": ArraySpec((14,))}


def test_a_missing_key_names_it_and_only_a_few_of_the_many_keys_that_came():
    junk = {f"junk_{i:06d}_{'x' * 20}": 0.0 for i in range(100_000)}
    with pytest.raises(InputError) as refused:
        validate({**junk, "state": np.zeros(14)}, SCHEMA)
    message = str(refused.value)
    assert message.startswith("observation is missing ['images/cam_high']")
    assert "got 100001 keys: ['junk_000000" in message and "... 99996 more]" in message
    assert len(message) < 1024


@pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0, 224), (3, 224, 0)])
def test_an_empty_image_is_refused_by_its_shape(shape):
    with pytest.raises(InputError, match=r"'images/cam_high'\] should have shape \[3, \*, \*\]"):
        validate({"images": {"cam_high": np.zeros(shape, np.uint8)}, "state": np.zeros(14)}, SCHEMA)


def test_free_dims_accept_any_positive_size():
    validate({"images": {"cam_high": np.zeros((3, 1, 7), np.uint8)}, "state": np.zeros(14)}, SCHEMA)
