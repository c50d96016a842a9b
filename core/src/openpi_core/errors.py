"""The project's exception types.

Every error raised on bad input derives from :class:`OpenpiError`, and the
input-validation ones also derive from :class:`ValueError`, so callers can catch
either. Messages name the field, what was expected and what came.
"""


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
