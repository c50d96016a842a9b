"""One check's outcome and the table ``pi conformance`` prints."""

import attrs
import numpy as np


@attrs.frozen
class CheckResult:
    """``max_diff`` is an absolute difference unless ``relative`` is set."""

    name: str
    max_diff: float
    bound: float
    relative: bool = False
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_diff) and self.max_diff <= self.bound)


def compare(name: str, actual: np.ndarray, expected: np.ndarray, bound: float) -> CheckResult:
    """Max absolute difference; a shape mismatch is an infinite difference."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return CheckResult(name, float("inf"), bound, detail=f"shape {list(actual.shape)} != {list(expected.shape)}")
    return CheckResult(name, float(np.max(np.abs(actual - expected), initial=0.0)), bound)


ZERO_GRADIENT_FLOOR = 1e-3
"""Some gradients are zero in exact arithmetic (a key bias shifts every attention logit
of a query equally), so both backends return rounding noise there. Each array's error is
measured against its own largest value, but never against less than this fraction of the
largest value of any array."""


def compare_relative(
    name: str, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], bound: float
) -> CheckResult:
    """Worst per-array ``max|a - e| / max(max|e|, floor)`` over arrays matched by name
    (see :data:`ZERO_GRADIENT_FLOOR`)."""
    if set(actual) != set(expected):
        missing = sorted(set(actual) ^ set(expected))[:5]
        return CheckResult(name, float("inf"), bound, relative=True, detail=f"names differ: {missing}")
    worst, worst_name = 0.0, ""
    floor = ZERO_GRADIENT_FLOOR * max(float(np.max(np.abs(e), initial=0.0)) for e in expected.values())
    for key in sorted(expected):
        a, e = np.asarray(actual[key], np.float64), np.asarray(expected[key], np.float64)
        if a.shape != e.shape:
            return CheckResult(name, float("inf"), bound, True, f"{key}: shape {list(a.shape)} != {list(e.shape)}")
        scale = max(float(np.max(np.abs(e), initial=0.0)), floor, 1e-30)
        diff = float(np.max(np.abs(a - e), initial=0.0)) / scale
        if not diff <= worst:
            worst, worst_name = diff, key
    return CheckResult(name, worst, bound, relative=True, detail=f"worst: {worst_name}" if worst_name else "")


def format_table(results: list[CheckResult]) -> str:
    """Check, max diff, bound, pass/fail: one row per check."""
    rows = [["check", "max diff", "bound", "result"]]
    for result in results:
        kind = " (rel)" if result.relative else ""
        verdict = "pass" if result.passed else "FAIL"
        detail = f"  {result.detail}" if result.detail and not result.passed else ""
        rows.append([result.name, f"{result.max_diff:.3g}{kind}", f"{result.bound:.3g}", verdict + detail])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
