"""The training data pipeline of a preset (or of an embodiment and a model family).

One LeRobot sample travels (the inference path of :mod:`openpi_core.policy`, with the
dataset's repack in front and the same transform order after it)::

    dataset sample                  LeRobot keys ("observation.state", "action", "task", …)
      -> PromptFromLeRobotTask      "prompt" from the sample's task, when the dataset has tasks
      -> repack                     LeRobot keys -> the robot's keys (the embodiment's
                                    repack_transforms(), or a mapping given for this dataset)
      -> InjectDefaultPrompt(the run's default prompt)
      -> embodiment inputs          robot keys -> image / image_mask / state / actions / prompt
         (+ the preset's extra transforms, + DeltaActions when the preset predicts deltas)
      -> Normalize                  z-score for π0, quantiles for π0.5 and π0-FAST
      -> InjectDefaultPrompt(preset default prompt)
      -> model transforms           resize, tokenize, pad state and actions to the model width

:func:`stats_transforms` is the part before Normalize: the norm stats are computed on
its output.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from openpi_core.errors import InputError
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.plugins import get_model_spec
from openpi_core.specs import AbstractEmbodiment, NamedConfig
from openpi_core.transforms import (
    DataTransform,
    DeltaActions,
    InjectDefaultPrompt,
    Normalize,
    NormStats,
    PromptFromLeRobotTask,
    RepackTransform,
)
from openpi_core.transforms.model import with_tokenizer


def uses_quantiles(family: str) -> bool:
    """π0 normalizes with z-scores, π0.5 and π0-FAST with quantiles (as openpi)."""
    return family != "pi0"


@attrs.frozen
class DataRecipe:
    """What turns one dataset's samples into model inputs for one run.

    Attributes:
        embodiment: the robot the data was recorded on.
        model_config: the model being trained.
        preset: the named config, when training one (its extra transforms, delta
            actions and default prompt apply).
        repack: LeRobot key of each robot observation key (a
            :class:`~openpi_core.transforms.RepackTransform` structure), for datasets whose
            keys differ from the embodiment's default ``repack_transforms()``.
        tasks: task index -> text (the dataset's ``tasks``); they become the prompt
            when the repack keeps ``prompt`` (the ALOHA repacks do not, as in openpi).
        default_prompt: the prompt of samples without one; wins over the preset's.
        tokenizer: a SentencePiece model for the prompt; default the model spec's.
        fast_tokenizer: π0-FAST's action tokenizer directory or URL; default the
            published ``physical-intelligence/fast``.
    """

    embodiment: AbstractEmbodiment
    model_config: Pi0Config | Pi0FASTConfig
    preset: NamedConfig | None = None
    repack: Mapping[str, Any] | None = None
    tasks: Mapping[int, str] | None = None
    default_prompt: str | None = None
    tokenizer: str | Path | None = None
    fast_tokenizer: str | Path | None = None

    @property
    def family(self) -> str:
        return self.model_config.family


def repack_transforms(recipe: DataRecipe) -> list[DataTransform]:
    """The dataset's task as the prompt, then LeRobot keys -> the robot's keys."""
    prompt = [PromptFromLeRobotTask(dict(recipe.tasks))] if recipe.tasks else []
    if recipe.repack is not None:
        return [*prompt, RepackTransform(recipe.repack)]
    return [*prompt, *recipe.embodiment.repack_transforms().inputs]


def stats_transforms(recipe: DataRecipe) -> list[DataTransform]:
    """Dataset sample -> the robot-neutral dict whose ``state`` and ``actions`` get normalized.

    Raises:
        InputError: the preset predicts delta actions but the embodiment has no
            ``delta_action_mask``.
    """
    preset = recipe.preset
    delta: list[DataTransform] = []
    if preset is not None and preset.delta_actions:
        mask = getattr(recipe.embodiment, "delta_action_mask", None)
        if mask is None:
            raise InputError(
                f"preset {preset.name!r} predicts delta actions, but {recipe.embodiment.name!r} has no delta_action_mask"
            )
        delta = [DeltaActions(mask)]
    return [
        *repack_transforms(recipe),
        InjectDefaultPrompt(recipe.default_prompt),
        *recipe.embodiment.transforms(recipe.family).inputs,
        *(preset.extra_transforms if preset else ()),
        *delta,
    ]


def training_transforms(recipe: DataRecipe, norm_stats: Mapping[str, NormStats]) -> list[DataTransform]:
    """Dataset sample -> model-ready dict (``image``, ``image_mask``, ``state``,
    ``tokenized_prompt``…, ``actions``) for one sample.

    Raises:
        InputError: as :func:`stats_transforms`, or the tokenizer has more pieces than
            the model's vocabulary.
        NormStatsError: invalid stats, or quantile stats missing for π0.5.
    """
    model_inputs = get_model_spec(recipe.family).model_transforms(recipe.model_config).inputs
    return [
        *stats_transforms(recipe),
        Normalize(dict(norm_stats), use_quantiles=uses_quantiles(recipe.family)),
        InjectDefaultPrompt(recipe.preset.default_prompt if recipe.preset else None),
        *(
            with_tokenizer(transform, recipe.tokenizer, recipe.model_config.vocab_size, recipe.fast_tokenizer)
            for transform in model_inputs
        ),
    ]
