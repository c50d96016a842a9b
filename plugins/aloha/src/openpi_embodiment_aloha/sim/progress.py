"""Progress bars on stderr for simulated episodes: one bar over the episodes, one over the steps of the current one."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def episode_bars(
    episodes: int, steps: int, description: str, progress: bool | None
) -> Iterator[tuple[Callable[[Any], None], Callable[[], None]]]:
    """Yield ``(on_episode, on_step)`` callbacks that advance two tqdm bars with ETAs.

    ``on_episode(result)`` counts a finished episode (and its success, when ``result``
    has a ``success`` attribute) and restarts the step bar; ``on_step()`` counts one of
    the ``steps`` steps of the current episode.

    Args:
        progress: True always draws the bars, False never, None on terminals only
            (tqdm's ``disable=None``), so redirected output stays clean.
    """
    from tqdm import tqdm

    disable = None if progress is None else not progress
    successes = 0
    with (
        tqdm(total=episodes, desc=description, unit="episode", disable=disable, position=0) as outer,
        tqdm(
            total=steps, desc="  steps of this episode", unit="step", disable=disable, position=1, leave=False
        ) as inner,
    ):

        def on_episode(result: Any) -> None:
            nonlocal successes
            successes += bool(getattr(result, "success", False))
            inner.refresh()
            outer.update()
            outer.set_postfix(successes=successes)
            if outer.n < episodes:
                inner.reset(total=steps)

        yield on_episode, inner.update
