"""The standard numpy transforms shared by every embodiment and model.

Each transform returns a new dict and leaves its input, and the arrays in it,
unchanged. Shapes: ``state`` ``[..., S]``, ``actions`` ``[..., H, A]`` (horizon H),
with the same leading batch dims, if any, on both.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.schema import flatten_dict
from openpi_core.transforms.base import DataDict
from openpi_core.transforms.image import resize_with_pad


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """Concatenate runs: a positive ``n`` adds ``n`` Trues, a negative ``n`` adds ``|n|`` Falses.

    ``make_bool_mask(6, -1, 6, -1)`` marks two 6-joint arms with their grippers left out.
    """
    mask: list[bool] = []
    for dim in dims:
        mask.extend([dim > 0] * abs(dim))
    return tuple(mask)


def _check_structure(instance: Any, attribute: attrs.Attribute, structure: Mapping[str, Any]) -> None:
    for path, source in flatten_dict(structure).items():
        if not isinstance(source, str):
            raise InputError(f"RepackTransform: the source of {path!r} should be a key path string, got {source!r}")


@attrs.frozen
class RepackTransform:
    """Build a new dict shaped like ``structure``, taking each leaf from the input.

    ``structure`` is a nested dict whose leaves are ``"/"``-separated key paths into
    the input (``"observation/images/top"`` reads ``data["observation"]["images"]["top"]``
    or a flat ``data["observation/images/top"]``). Its keys are copied as they are, so
    a key containing ``"/"`` stays one flat key. Input keys not named are dropped.

    Raises:
        InputError: a source path is not in the data (the message lists the ones that are).
    """

    structure: Mapping[str, Any] = attrs.field(validator=_check_structure)

    def __call__(self, data: DataDict) -> DataDict:
        flat = flatten_dict(data)
        return _repack(self.structure, flat, "")


def _repack(structure: Mapping[str, Any], flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for key, source in structure.items():
        path = f"{prefix}{key}"
        if isinstance(source, Mapping):
            out[key] = _repack(source, flat, f"{path}/")
        elif source in flat:
            out[key] = flat[source]
        else:
            raise InputError(f"RepackTransform: {path!r} reads {source!r}, which is missing; got keys {sorted(flat)}")
    return out


@attrs.frozen
class InjectDefaultPrompt:
    """Set ``data["prompt"]`` to ``prompt`` when the data has none and ``prompt`` is not None."""

    prompt: str | None

    def __call__(self, data: DataDict) -> DataDict:
        if self.prompt is None or "prompt" in data:
            return data
        return {**data, "prompt": self.prompt}


def _to_mask(mask: Sequence[bool] | None) -> tuple[bool, ...] | None:
    return None if mask is None else tuple(bool(m) for m in mask)


def _shift_actions(data: DataDict, mask: tuple[bool, ...], *, subtract: bool, what: str) -> DataDict:
    """Subtract (or add) ``state`` from ``actions`` on the masked dims, at every horizon step."""
    if "state" not in data:
        raise InputError(f"{what} needs 'state' next to 'actions'; got keys {sorted(data)}")
    state, actions = np.asarray(data["state"]), np.asarray(data["actions"])
    dims = len(mask)
    if actions.ndim != state.ndim + 1 or actions.shape[:-2] != state.shape[:-1]:
        raise InputError(
            f"{what}: actions should be [..., H, A] and state [..., S] with the same leading dims, "
            f"got actions {list(actions.shape)} and state {list(state.shape)}"
        )
    if actions.shape[-1] < dims or state.shape[-1] < dims:
        raise InputError(
            f"{what}: mask covers {dims} dims but actions have {actions.shape[-1]} and state {state.shape[-1]}"
        )
    dtype = actions.dtype if actions.dtype.kind == "f" else np.result_type(actions.dtype, state.dtype)
    out = actions.astype(dtype)  # a copy: the input array is left alone
    offset = np.where(mask, state[..., :dims], 0)[..., None, :]
    if subtract:
        out[..., :dims] -= offset
    else:
        out[..., :dims] += offset
    return {**data, "actions": out}


@attrs.frozen
class DeltaActions:
    """Make the masked action dims relative to the current state: ``actions - state``.

    ``mask`` covers the leading action dims; dims past its length are untouched. With
    ``mask=None``, or no ``actions`` in the data (inference), this is the identity.

    Raises:
        InputError: ``state`` missing, or shapes that do not fit the mask.
    """

    mask: tuple[bool, ...] | None = attrs.field(converter=_to_mask)

    def __call__(self, data: DataDict) -> DataDict:
        if self.mask is None or "actions" not in data:
            return data
        return _shift_actions(data, self.mask, subtract=True, what="DeltaActions")


@attrs.frozen
class AbsoluteActions:
    """Invert :class:`DeltaActions`: ``actions + state`` on the masked dims."""

    mask: tuple[bool, ...] | None = attrs.field(converter=_to_mask)

    def __call__(self, data: DataDict) -> DataDict:
        if self.mask is None or "actions" not in data:
            return data
        return _shift_actions(data, self.mask, subtract=False, what="AbsoluteActions")


def _positive(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise InputError(f"{type(instance).__name__}.{attribute.name} should be >= 1, got {value}")


@attrs.frozen
class SubsampleActions:
    """Keep every ``stride``-th step of the action chunk ``[..., H, A]``; identity without actions."""

    stride: int = attrs.field(validator=_positive)

    def __call__(self, data: DataDict) -> DataDict:
        if "actions" not in data:
            return data
        actions = np.asarray(data["actions"])
        if actions.ndim < 2:
            raise InputError(f"SubsampleActions: actions should be [..., H, A], got {list(actions.shape)}")
        return {**data, "actions": actions[..., :: self.stride, :]}


@attrs.frozen
class PadStatesAndActions:
    """Zero-pad the last dim of ``state`` and of ``actions`` (if present) to ``model_action_dim``.

    Raises:
        InputError: ``state`` is missing, or either array is already wider than the model.
    """

    model_action_dim: int = attrs.field(validator=_positive)

    def __call__(self, data: DataDict) -> DataDict:
        if "state" not in data:
            raise InputError(f"PadStatesAndActions needs 'state'; got keys {sorted(data)}")
        out = {**data, "state": self._pad("state", data["state"])}
        if "actions" in data:
            out["actions"] = self._pad("actions", data["actions"])
        return out

    def _pad(self, key: str, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[-1] > self.model_action_dim:
            raise InputError(
                f"PadStatesAndActions: {key} should be [..., D] with D <= {self.model_action_dim}, "
                f"got {list(array.shape)}"
            )
        widths = [(0, 0)] * (array.ndim - 1) + [(0, self.model_action_dim - array.shape[-1])]
        return np.pad(array, widths)


@attrs.frozen
class PromptFromLeRobotTask:
    """Set ``data["prompt"]`` to the LeRobot task named by ``data["task_index"]``.

    ``tasks`` maps task index to task text (a LeRobot dataset's ``meta.tasks``).

    Raises:
        InputError: ``task_index`` is missing or not in ``tasks``.
    """

    tasks: Mapping[int, str]

    def __call__(self, data: DataDict) -> DataDict:
        if "task_index" not in data:
            raise InputError(f"PromptFromLeRobotTask needs 'task_index'; got keys {sorted(data)}")
        index = int(np.asarray(data["task_index"]).item())
        if index not in self.tasks:
            raise InputError(f"PromptFromLeRobotTask: task_index {index} is not among the tasks {sorted(self.tasks)}")
        return {**data, "prompt": self.tasks[index]}


def _map_cameras(data: DataDict, what: str, fn: Callable[[Any], np.ndarray]) -> DataDict:
    """Apply ``fn`` to every camera of ``data["image"]``; an :class:`InputError` names the camera.

    Raises:
        InputError: ``image`` is missing or not a dict of cameras, or ``fn`` rejected an image.
    """
    images = data.get("image")
    if not isinstance(images, Mapping):
        raise InputError(f"{what} needs data['image'] to be a dict of cameras; got keys {sorted(data)}")
    out = {}
    for name, image in images.items():
        try:
            out[name] = fn(image)
        except InputError as error:
            raise InputError(f"{what}: image {name!r}: {error}") from error
    return {**data, "image": out}


def _unit_fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{type(instance).__name__}: {attribute.name} should be a fraction in [0, 1], got {value}")


def _to_frame(value: Sequence[int] | None) -> tuple[int, int] | None:
    return None if value is None else tuple(int(size) for size in value)


def _frame_size(instance: Any, attribute: attrs.Attribute, value: tuple[int, ...] | None) -> None:
    if value is not None and (len(value) != 2 or min(value) < 1):
        raise InputError(f"CropImages: frame should be (height, width), both >= 1, got {value}")


@attrs.frozen
class CropImages:
    """Cut the same window out of every camera in ``data["image"]``.

    The window is given as fractions of each image's height and width, so one crop
    fits any resolution: ``CropImages(0.25, 0.25, 0.5, 0.5)`` keeps the middle half of
    each side, rows 56..167 and columns 56..167 of a 224x224 image. Images are
    ``[..., H, W, C]``; leading batch dims are kept.

    With ``frame=(height, width)`` each image is first brought to that size with
    :func:`~openpi_core.transforms.image.resize_with_pad` (the geometry a policy was
    trained in), and the window is cut from that. A client's frame of any size then
    gives the window its training frames gave: the same fractions of a 480x640 frame
    would be a 3:4 window, not the square one, and the model input would differ. An
    image already of the frame's size is cropped exactly as without ``frame``.

    Raises:
        InputError: the window leaves the image, ``frame`` is not two sizes >= 1,
            ``image`` is missing or not a dict of cameras, or an image has fewer than 3
            dims (or, with ``frame``, is neither uint8 nor float).
    """

    top: float = attrs.field(validator=_unit_fraction)
    left: float = attrs.field(validator=_unit_fraction)
    height: float = attrs.field(validator=_unit_fraction)
    width: float = attrs.field(validator=_unit_fraction)
    frame: tuple[int, int] | None = attrs.field(default=None, converter=_to_frame, validator=_frame_size)

    def __attrs_post_init__(self) -> None:
        if self.height == 0.0 or self.width == 0.0 or self.top + self.height > 1.0 or self.left + self.width > 1.0:
            raise InputError(
                f"CropImages: the window top={self.top} left={self.left} height={self.height} width={self.width} "
                "should be non-empty and lie inside the image (top + height <= 1, left + width <= 1)"
            )

    def __call__(self, data: DataDict) -> DataDict:
        return _map_cameras(data, "CropImages", self._crop)

    def _crop(self, image: Any) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim < 3:
            raise InputError(f"should be [..., H, W, C], got shape {list(image.shape)}")
        if self.frame is not None:
            image = resize_with_pad(image, *self.frame)
        rows, cols = image.shape[-3], image.shape[-2]
        top, left = round(self.top * rows), round(self.left * cols)
        height, width = max(1, round(self.height * rows)), max(1, round(self.width * cols))
        return image[..., top : top + height, left : left + width, :]


@attrs.frozen
class ResizeImages:
    """Apply :func:`~openpi_core.transforms.image.resize_with_pad` to every camera in ``data["image"]``.

    Raises:
        InputError: ``image`` is missing or not a dict of cameras, or an image is malformed.
    """

    height: int = attrs.field(validator=_positive)
    width: int = attrs.field(validator=_positive)

    def __call__(self, data: DataDict) -> DataDict:
        return _map_cameras(data, "ResizeImages", lambda image: resize_with_pad(image, self.height, self.width))
