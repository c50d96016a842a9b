"""``pi conformance``: run the suite with pytest and print its table."""

from pathlib import Path

import click

SUITE = Path(__file__).resolve().parent / "suite"

NO_TESTS_COLLECTED = 5


@click.command()
@click.option("--backends", default=None, help="Comma-separated backends to compare (default: all installed).")
@click.option("--family", default="pi0,pi05,pi0_fast", show_default=True, help="Comma-separated model families.")
@click.option("--dtype", default="float32,bfloat16", show_default=True, help="Comma-separated dtypes.")
@click.option(
    "--reference",
    "references",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Reference directory recorded from openpi (repeatable); checks every backend from every weight form.",
)
@click.option("--embodiments", default=None, help="Comma-separated embodiments to check (default: all installed).")
@click.option("--junit-xml", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML results here.")
@click.option("-v", "--verbose", is_flag=True, help="List every check as it runs.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar over the checks with an ETA on stderr, in place of pytest's dots "
    "(default: only when stderr is a terminal).",
)
def conformance(backends, family, dtype, references, embodiments, junit_xml, verbose, progress) -> None:
    """Prove numerical parity between backends (and with openpi) and check plugin contracts.

    By default every pair of installed backends is compared for π0, π0.5 and π0-FAST,
    in float32 and bfloat16 (π0-FAST in float32), and every installed embodiment's
    contract is checked. Exits non-zero when any check fails, naming it.
    """
    import sys

    import pytest

    args = [str(SUITE), "-c", str(SUITE / "pytest.ini"), "--rootdir", str(SUITE)]
    args += ["-p", "openpi_conformance.pytest_plugin", "--pi-family", family, "--pi-dtype", dtype]
    if backends:
        args += ["--pi-backends", backends]
    if embodiments is not None:
        args += ["--pi-embodiments", embodiments]
    for reference in references:
        args += ["--pi-reference", str(Path(reference).resolve())]
    if not references:
        args += ["--deselect", str(SUITE / "test_reference_parity.py")]
    if junit_xml:
        args += ["--junit-xml", str(Path(junit_xml).resolve())]
    args += ["-v"] if verbose else ["-q", "--no-header", "-rN"]
    if progress is None:
        progress = not verbose and sys.stderr.isatty()
    if progress:
        args += ["--pi-progress", "on", "-o", "console_output_style=classic"]
    code = pytest.main(args)
    if code == NO_TESTS_COLLECTED:
        raise click.ClickException(
            "nothing to check: no two backends implement the chosen families, and no "
            "reference or embodiment was selected"
        )
    if code != 0:
        raise SystemExit(int(code))
