"""Two backends, one seeded model: prefix, velocity, actions, loss and gradients agree."""

from openpi_conformance.parity import GRADIENT_BOUND, backend_outputs, bound
from openpi_conformance.results import compare, compare_relative


def test_backend_parity(parity_case, record_check):
    family, dtype, first, second, output = parity_case
    a = backend_outputs(first, family, dtype)
    b = backend_outputs(second, family, dtype)
    name = f"{family}/{dtype}/{first}-vs-{second}/{output}"
    if output == "gradients":
        record_check(compare_relative(name, a["gradients"], b["gradients"], GRADIENT_BOUND))
    else:
        record_check(compare(name, a[output], b[output], bound(output, dtype)))
