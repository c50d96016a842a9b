"""Progress bars of the ``pi`` commands: on stderr, on terminals only unless asked for."""

from collections.abc import Callable
from typing import Any

import click

progress_option: Callable[[Callable[..., Any]], Callable[..., Any]] = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars with ETAs on stderr (default: only when stderr is a terminal).",
)
"""The ``--progress/--no-progress`` option; its value (True, False or None) goes to :func:`progress_bar`."""


def progress_bar(progress: bool | None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr: drawn when ``progress`` is True, never when False, and when None
    only if stderr is a terminal (tqdm's ``disable=None``), so redirected output stays clean."""
    from tqdm import tqdm

    return tqdm(disable=None if progress is None else not progress, **kwargs)
