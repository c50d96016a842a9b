"""The pytest plugin under ``pi conformance``.

Third parties run the same suite in their own CI with::

    pytest -p openpi_conformance.pytest_plugin --pyargs openpi_conformance.suite \\
        --pi-backends jax,torch --pi-family pi0 --junit-xml conformance.xml

Options select what is checked; each check records a :class:`CheckResult`, and the
session ends with the table of all of them. ``--pi-progress on`` draws a progress bar
over the collected checks on stderr (``auto``: when stderr is a terminal), with the
check running and an ETA, in place of pytest's dots.
"""

import itertools
import sys
from typing import Any

import pytest

from openpi_conformance.fast_parity import FAST_OUTPUTS
from openpi_conformance.parity import OUTPUTS
from openpi_conformance.reference_parity import available_forms
from openpi_conformance.results import CheckResult, format_table
from openpi_conformance.rtc_parity import BACKEND_OUTPUTS as RTC_BACKEND_OUTPUTS
from openpi_conformance.rtc_parity import PAIR_OUTPUTS as RTC_PAIR_OUTPUTS
from openpi_core.plugins import get_plugin_manager

RESULTS = pytest.StashKey[list[CheckResult]]()
FAMILIES = ("pi0", "pi05")
ALL_FAMILIES = (*FAMILIES, "pi0_fast")
DTYPES = ("float32", "bfloat16")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("openpi-conformance")
    group.addoption("--pi-backends", default=None, help="Comma-separated backends (default: all installed).")
    group.addoption("--pi-family", default=",".join(ALL_FAMILIES), help="Comma-separated model families.")
    group.addoption("--pi-dtype", default=",".join(DTYPES), help="Comma-separated dtypes.")
    group.addoption("--pi-reference", action="append", default=[], help="Reference directory (repeatable).")
    group.addoption("--pi-embodiments", default=None, help="Comma-separated embodiments (default: all installed).")
    group.addoption(
        "--pi-progress",
        choices=("on", "off", "auto"),
        default="off",
        help="A progress bar over the checks on stderr instead of dots (auto: when stderr is a terminal).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RESULTS] = []
    choice = config.getoption("--pi-progress")
    if choice == "on" or (choice == "auto" and sys.stderr.isatty()):
        config.pluginmanager.register(ProgressBar(), "openpi-conformance-progress")


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def selected_backends(config: pytest.Config, family: str) -> list[str]:
    registry = get_plugin_manager().registry("backend")
    names = _split(config.getoption("--pi-backends")) or registry.names()
    return [name for name in names if family in registry.get(name).families]


def _can_train(backend: str) -> bool:
    """Whether the backend overrides the default ``create_trainer`` (which cannot train)."""
    from openpi_core.specs import AbstractBackend

    return (
        type(get_plugin_manager().registry("backend").get(backend)).create_trainer is not AbstractBackend.create_trainer
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    families = _split(config.getoption("--pi-family")) or []
    dtypes = _split(config.getoption("--pi-dtype")) or []
    if "parity_case" in metafunc.fixturenames:
        cases = []
        for family, dtype in itertools.product(families, dtypes):
            if family not in FAMILIES:
                continue
            backends = selected_backends(config, family)
            outputs = [*OUTPUTS, "gradients"] if dtype == "float32" else list(OUTPUTS)
            for (first, second), output in itertools.product(itertools.combinations(backends, 2), outputs):
                cases.append(
                    pytest.param(
                        (family, dtype, first, second, output), id=f"{family}-{dtype}-{first}-vs-{second}-{output}"
                    )
                )
        metafunc.parametrize("parity_case", cases)
    if "rtc_case" in metafunc.fixturenames:
        cases = []
        if "float32" in dtypes:
            for family in families:
                if family not in FAMILIES:
                    continue
                backends = selected_backends(config, family)
                checks = [(pair, output) for pair in itertools.combinations(backends, 2) for output in RTC_PAIR_OUTPUTS]
                checks += [((backend,), output) for backend in backends for output in RTC_BACKEND_OUTPUTS]
                for chosen, output in checks:
                    case_id = f"{family}-float32-{'-vs-'.join(chosen)}-{output}"
                    cases.append(pytest.param((family, chosen, output), id=case_id))
        metafunc.parametrize("rtc_case", cases)
    if "fast_case" in metafunc.fixturenames:
        cases = []
        if "pi0_fast" in families and "float32" in dtypes:
            backends = selected_backends(config, "pi0_fast")
            for (first, second), output in itertools.product(itertools.combinations(backends, 2), FAST_OUTPUTS):
                cases.append(pytest.param((first, second, output), id=f"pi0_fast-float32-{first}-vs-{second}-{output}"))
        metafunc.parametrize("fast_case", cases)
    if "training_case" in metafunc.fixturenames:
        cases = []
        if "float32" in dtypes:
            for family in families:
                if family not in ALL_FAMILIES:
                    continue
                trainers = [name for name in selected_backends(config, family) if _can_train(name)]
                for first, second in itertools.combinations(trainers, 2):
                    cases.append(pytest.param((family, first, second), id=f"{family}-{first}-vs-{second}-train-step"))
        metafunc.parametrize("training_case", cases)
    if "reference_case" in metafunc.fixturenames:
        cases = []
        for path in config.getoption("--pi-reference"):
            from openpi_conformance.reference_parity import reference_set

            family = reference_set(path).family
            for backend, form in itertools.product(selected_backends(config, family), available_forms(path)):
                cases.append(pytest.param((path, backend, form), id=f"{family}-{backend}-{form}"))
        metafunc.parametrize("reference_case", cases)
    if "embodiment_name" in metafunc.fixturenames:
        names = _split(config.getoption("--pi-embodiments"))
        if names is None:
            names = get_plugin_manager().registry("embodiment").names()
        metafunc.parametrize("embodiment_name", names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop checks whose case list came out empty (say, one backend installed): they
    were not asked for, so they are neither run nor reported as skipped."""
    empty = [item for item in items if _is_empty_parametrization(item)]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if item not in empty]


def _is_empty_parametrization(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("skip")
    return marker is not None and str(marker.kwargs.get("reason", "")).startswith("got empty parameter set")


@pytest.fixture
def record_check(request: pytest.FixtureRequest):
    """Record results for the final table and fail the test on the first failed one."""

    def record(*results: CheckResult) -> None:
        request.config.stash[RESULTS].extend(results)
        failed = [r for r in results if not r.passed]
        assert not failed, "; ".join(
            f"{r.name}: max diff {r.max_diff:.3g} > bound {r.bound:.3g} {r.detail}".rstrip() for r in failed
        )

    return record


class ProgressBar:
    """A tqdm bar over the collected checks on stderr, naming the check running, with an ETA.

    Registered by :func:`pytest_configure` under ``--pi-progress on`` (or ``auto`` on a
    terminal). pytest's per-check letters are left out while it is drawn.
    """

    def __init__(self) -> None:
        self.bar: Any = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not session.items:
            return
        from tqdm import tqdm

        # Capture is suspended between checks, where the bar is drawn; miniters=1 keeps
        # tqdm's monitor thread from redrawing it in the middle of a (captured) check.
        self.bar = tqdm(total=len(session.items), desc="conformance", unit="check", file=sys.stderr, miniters=1)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(nodeid.rpartition("::")[2], refresh=True)

    def pytest_runtest_logfinish(self) -> None:
        if self.bar is not None:
            self.bar.update()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport):
        category, letter, word = yield
        return category, "" if self.bar is not None else letter, word

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        """Close the bar before pytest's summary and the table are printed."""
        if self.bar is not None:
            self.bar.set_postfix_str("")
            self.bar.close()
            self.bar = None


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if results:
        terminalreporter.section("openpi conformance")
        terminalreporter.write_line(format_table(results))
