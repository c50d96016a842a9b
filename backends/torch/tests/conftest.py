"""Reference sets and float32 models shared by the torch backend's tests."""

import attrs
import pytest
from safetensors.numpy import load_file

from openpi_core.models.pi0_weights import pi0_weight_schema, rename_from_openpi_jax
from openpi_core.reference import ReferenceSet, load_reference

FAMILIES = ("pi0", "pi05")


@attrs.frozen
class Case:
    """One reference family: its recorded data, canonical float32 params and a float32 model."""

    ref: ReferenceSet
    params: dict
    model: object


@pytest.fixture(scope="module", autouse=True)
def single_intra_op_thread():
    """The tiny reference models gain nothing from intra-op threads, and on a small
    shared machine OpenMP's spin-waiting makes them several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", params=FAMILIES)
def case(request, reference_root) -> Case:
    from openpi_backend_torch.pi0 import Pi0Model

    ref = load_reference(reference_root / request.param)
    params = rename_from_openpi_jax(load_file(str(ref.openpi_params_path)), pi0_weight_schema(ref.config))
    return Case(ref=ref, params=params, model=Pi0Model.from_params(ref.config, params))
