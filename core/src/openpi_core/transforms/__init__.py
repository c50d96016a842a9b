"""Data transforms: the protocol, grouping, and the standard numpy transforms."""

from openpi_core.transforms.base import CompositeTransform, DataDict, DataTransform, Group, compose
from openpi_core.transforms.common import (
    AbsoluteActions,
    CropImages,
    DeltaActions,
    InjectDefaultPrompt,
    PadStatesAndActions,
    PromptFromLeRobotTask,
    RepackTransform,
    ResizeImages,
    SubsampleActions,
    make_bool_mask,
)
from openpi_core.transforms.image import resize_with_pad, to_uint8_hwc
from openpi_core.transforms.normalize import Normalize, NormStats, Unnormalize, load_norm_stats, save_norm_stats

__all__ = [
    "AbsoluteActions",
    "CompositeTransform",
    "CropImages",
    "DataDict",
    "DataTransform",
    "DeltaActions",
    "Group",
    "InjectDefaultPrompt",
    "NormStats",
    "Normalize",
    "PadStatesAndActions",
    "PromptFromLeRobotTask",
    "RepackTransform",
    "ResizeImages",
    "SubsampleActions",
    "Unnormalize",
    "compose",
    "load_norm_stats",
    "make_bool_mask",
    "resize_with_pad",
    "save_norm_stats",
    "to_uint8_hwc",
]
