"""Two backends, one seeded π0-FAST: embeddings, logits, loss, greedy tokens and gradients agree."""

from openpi_conformance.fast_parity import GRADIENT_BOUND, fast_backend_outputs, fast_bound
from openpi_conformance.results import compare, compare_relative


def test_fast_parity(fast_case, record_check):
    first, second, output = fast_case
    a, b = fast_backend_outputs(first), fast_backend_outputs(second)
    name = f"pi0_fast/float32/{first}-vs-{second}/{output}"
    if output == "gradients":
        record_check(compare_relative(name, a["gradients"], b["gradients"], GRADIENT_BOUND))
    else:
        record_check(compare(name, a[output], b[output], fast_bound(output)))
