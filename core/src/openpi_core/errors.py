"""The project's exception types.

Every error raised on bad input derives from :class:`OpenpiError`, and the
input-validation ones also derive from :class:`ValueError`, so callers can catch
either. Messages name the field, what was expected and what came; :func:`short_repr` and
:func:`few` keep what came short when it is untrusted input.
"""

from collections.abc import Iterable
from typing import Any


class OpenpiError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(OpenpiError, ValueError):
    """An observation, action chunk, config or file did not have the expected form."""


class NormStatsError(InputError):
    """Normalization statistics are missing keys, non-finite or of zero width."""


class WeightsError(InputError):
    """A checkpoint's parameter names or shapes do not match the model."""


class PluginError(OpenpiError):
    """A plugin misbehaved: a duplicate registration, a misspelled hook, a bad object."""


class UnknownNameError(OpenpiError, LookupError):
    """A backend, model, embodiment, config or checkpoint format that is not installed."""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages about untrusted input."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} long)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


def few(items: Iterable[Any], limit: int = 5) -> str:
    """At most ``limit`` items of a collection, each shortened, and how many there were.

    ``few(["a", "b"])`` is ``"['a', 'b']"``; ``few(range(100), 2)`` is ``"[0, 1, ... 98 more]"``.
    """
    items = list(items)
    shown = ", ".join(short_repr(item) for item in items[:limit])
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return f"[{shown}{more}]"
