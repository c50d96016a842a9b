"""From the same weights and batch, one optimizer step gives the same parameters in two backends."""

from openpi_conformance.results import CheckResult, compare_relative
from openpi_conformance.training_parity import PARAMS_BOUND, SCALAR_BOUND, one_step


def test_training_step_parity(training_case, record_check):
    family, first, second = training_case
    a, b = one_step(first, family), one_step(second, family)
    name = f"{family}/float32/{first}-vs-{second}/train_step"
    relative_norm = abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-12)
    record_check(
        CheckResult(f"{name}/loss", abs(a["loss"] - b["loss"]), SCALAR_BOUND),
        CheckResult(f"{name}/grad_norm", relative_norm, SCALAR_BOUND, relative=True),
        compare_relative(f"{name}/param_updates", a["updates"], b["updates"], PARAMS_BOUND),
    )
