"""The transform protocol and the two ways to combine transforms.

A transform maps one nested data dict to another (``dict -> dict``). The same
transform objects serve training (one sample at a time) and inference (one
observation at a time, or a batch where a transform says so).
"""

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

DataDict = dict[str, Any]


@runtime_checkable
class DataTransform(Protocol):
    """Anything callable as ``transform(data) -> data``; must not mutate its input."""

    def __call__(self, data: DataDict) -> DataDict: ...


@attrs.frozen
class Group:
    """Input transforms and output transforms that belong together.

    ``inputs`` run in order on the way into the model; ``outputs`` run in order on the
    way out. :meth:`push` wraps a group around another stage: new inputs run *after*
    the existing ones and new outputs run *before* them, so the last stage pushed is
    the one closest to the model on both sides.
    """

    inputs: tuple[DataTransform, ...] = attrs.field(default=(), converter=tuple)
    outputs: tuple[DataTransform, ...] = attrs.field(default=(), converter=tuple)

    def push(self, *, inputs: Sequence[DataTransform] = (), outputs: Sequence[DataTransform] = ()) -> "Group":
        """Return a new group with ``inputs`` appended and ``outputs`` prepended."""
        return Group(inputs=(*self.inputs, *inputs), outputs=(*outputs, *self.outputs))


@attrs.frozen
class CompositeTransform:
    """Applies its transforms in order."""

    transforms: tuple[DataTransform, ...] = attrs.field(converter=tuple)

    def __call__(self, data: DataDict) -> DataDict:
        for transform in self.transforms:
            data = transform(data)
        return data


def compose(transforms: Sequence[DataTransform | Callable[[DataDict], DataDict]]) -> CompositeTransform:
    """Chain ``transforms`` into one transform that applies them left to right."""
    return CompositeTransform(tuple(transforms))
