"""Real-time chunking: guided chunks agree between backends, follow the prefix where it
is committed, and equal plain sampling without guidance."""

from openpi_conformance.parity import FLOAT32_BOUND
from openpi_conformance.results import CheckResult, compare
from openpi_conformance.rtc_parity import ADHERENCE_BOUND, ZERO_GUIDANCE_BOUND, prefix_distance, rtc_outputs


def test_rtc(rtc_case, record_check):
    family, backends, output = rtc_case
    a = rtc_outputs(backends[0], family)
    name = f"{family}/float32/{'-vs-'.join(backends)}/{output}"
    if output == "rtc_actions":
        record_check(compare(name, a["guided"], rtc_outputs(backends[1], family)["guided"], FLOAT32_BOUND))
    elif output == "rtc_prefix_adherence":
        unguided = prefix_distance(a["plain"], a["prefix"])
        detail = f"unguided: {unguided:.3g}"
        record_check(CheckResult(name, prefix_distance(a["guided"], a["prefix"]), ADHERENCE_BOUND, detail=detail))
    else:
        record_check(compare(name, a["zero_guidance"], a["plain"], ZERO_GUIDANCE_BOUND))
