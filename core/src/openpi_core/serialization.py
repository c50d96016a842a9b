"""One converter between config objects and plain dicts (JSON, TOML, CLI options)."""

from typing import Any, TypeVar

import cattrs

from openpi_core.errors import InputError

T = TypeVar("T")

converter = cattrs.Converter(forbid_extra_keys=True)


def unstructure(obj: Any) -> Any:
    """A config object as plain dicts, lists and scalars."""
    return converter.unstructure(obj)


def structure(data: Any, cls: type[T]) -> T:
    """Build ``cls`` from plain data.

    Raises:
        InputError: a key is unknown or missing, or a value has the wrong type; the
            message carries cattrs' description of every problem.
    """
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError) as error:
        details = "; ".join(cattrs.transform_error(error)) if isinstance(error, cattrs.BaseValidationError) else error
        raise InputError(f"invalid {cls.__name__}: {details}") from error
