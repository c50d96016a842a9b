"""Which of the three namings a set of weights uses, and taking any of them to canonical.

* ``canonical``: this project's dotted names (:mod:`openpi_core.models.pi0_weights`).
* ``openpi-jax``: openpi's JAX tree paths joined with ``/``.
* ``openpi-torch``: openpi's PyTorch / LeRobot module keys (``paligemma_with_expert.*``).
"""

from collections.abc import Iterable, Mapping

import numpy as np

from openpi_core.checkpoints.infer import ModelConfig, infer_config, weight_schema
from openpi_core.checkpoints.openpi_jax import canonical_from_openpi_jax
from openpi_core.checkpoints.openpi_torch import (
    canonical_from_openpi_torch,
    infer_config_from_openpi_torch,
    is_openpi_torch_naming,
)
from openpi_core.models.pi0_weights import check_against_schema


def detect_naming(names: Iterable[str]) -> str:
    """``openpi-torch``, ``openpi-jax`` or ``canonical``, from the parameter names alone."""
    names = list(names)
    if is_openpi_torch_naming(names):
        return "openpi-torch"
    if any("/" in name for name in names):
        return "openpi-jax"
    return "canonical"


def to_canonical(
    params: Mapping[str, np.ndarray], config: ModelConfig | None = None
) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Canonical arrays from arrays in any naming, checked against ``config``'s weight schema.

    Args:
        config: the model config; None infers it from the shapes.

    Raises:
        WeightsError: naming the first missing, unknown or mis-shaped parameter, with
            the expected and the found shape.
    """
    naming = detect_naming(params)
    if naming == "openpi-torch":
        config = config or infer_config_from_openpi_torch(params)
        return config, canonical_from_openpi_torch(params, config)
    canonical = canonical_from_openpi_jax(params) if naming == "openpi-jax" else dict(params)
    config = config or infer_config(canonical)
    return config, check_against_schema(canonical, weight_schema(config))
