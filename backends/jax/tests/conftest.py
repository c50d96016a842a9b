"""Models built from the reference weights, shared by every test of this package.

Session-scoped: jit compilation is the main cost of these tests, and the jitted
functions cache per model structure, so building each model once keeps the suite fast.
"""

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from openpi_backend_jax.pi0 import Pi0Model
from openpi_core.models.pi0_weights import pi0_weight_schema, rename_from_openpi_jax
from openpi_core.reference import ReferenceSet, load_reference

FAMILIES = ("pi0", "pi05")


@pytest.fixture(scope="session", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def references(reference_root) -> dict[str, ReferenceSet]:
    return {name: load_reference(reference_root / name) for name in FAMILIES}


@pytest.fixture(scope="session")
def canonical_params(references) -> dict[str, dict]:
    """Family -> the reference weights under canonical names (float32)."""
    return {
        name: rename_from_openpi_jax(load_file(str(ref.openpi_params_path)), pi0_weight_schema(ref.config))
        for name, ref in references.items()
    }


@pytest.fixture(scope="session")
def models(references, canonical_params) -> dict[str, Pi0Model]:
    """Family -> float32 model."""
    return {name: Pi0Model.from_params(ref.config, canonical_params[name]) for name, ref in references.items()}


@pytest.fixture(scope="session")
def bf16_models(references, canonical_params) -> dict[str, Pi0Model]:
    """Family -> bfloat16 model with the same weights, rounded."""
    return {
        name: Pi0Model.from_params(attrs.evolve(ref.config, dtype="bfloat16"), canonical_params[name])
        for name, ref in references.items()
    }


@pytest.fixture(scope="session")
def reference(references, family) -> ReferenceSet:
    return references[family]


@pytest.fixture(scope="session")
def model(models, family) -> Pi0Model:
    return models[family]


@pytest.fixture(scope="session")
def random_module():
    """``random_module(cls, *args, seed=0, **kwargs)``: an instance of the Equinox module
    ``cls`` with random normal weights (std 0.2), filled into a shape-only skeleton.
    Building it eagerly instead would dispatch (and compile) many tiny ops one by one."""

    def build(cls, *args, seed: int = 0, **kwargs):
        skeleton = eqx.filter_eval_shape(cls, *args, key=jax.random.key(0), **kwargs)
        rng = np.random.default_rng(seed)
        return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32) * 0.2), skeleton)

    return build
