"""A policy: one robot's transforms, normalization and one backend model, behind one call.

One observation travels this path (the data path of ARCHITECTURE.md)::

    robot dict
      -> InjectDefaultPrompt(default_prompt)            the policy's, e.g. pi run serve --default-prompt
      -> embodiment input transforms                     robot keys -> image / image_mask / state / prompt
         (+ the preset's extra transforms, + DeltaActions when the preset predicts deltas)
      -> Normalize                                       z-score for π0, quantiles for π0.5 and π0-FAST
      -> InjectDefaultPrompt(preset default prompt)
      -> model transforms                                resize to 224x224, tokenize, pad to the model width
      -> Observation, stacked over the prepared items -> model.sample_actions
      -> model output transforms -> Unnormalize (-> AbsoluteActions)
      -> embodiment output transforms                    model actions -> robot actions [H, robot dim]

Prompt precedence is openpi's: the observation's ``prompt``, then the policy's default
prompt, then the preset's.

An observation may carry the leftover of the robot's current chunk for real-time
chunking (the ``rtc/`` keys of :mod:`openpi_core.wire`). The leftover takes the path of
training actions: the embodiment's input transforms (which invert its output
transforms), delta actions and Normalize, then padding to the model's width and
horizon. It reaches ``model.sample_actions`` as ``prefix_actions`` with
``inference_delay`` and ``execution_horizon``.

:class:`Policy` is what the websocket server (:mod:`openpi_core.serving`) serves: it
splits :meth:`Policy.infer` into :meth:`~Policy.prepare` (one observation, on any
thread) and :meth:`~Policy.run` (one batched model call over several prepared items).
:func:`create_policy` assembles one from a preset name or from explicit parts.
"""

import inspect
import logging
import numbers
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core import wire
from openpi_core.checkpoints import load_checkpoint
from openpi_core.download import is_url, maybe_download
from openpi_core.errors import InputError, NormStatsError, OpenpiError, UnknownNameError, short_repr
from openpi_core.observation import Observation
from openpi_core.plugins import get_backend, get_config, get_embodiment, get_model_spec, names
from openpi_core.specs import AbstractEmbodiment, NamedConfig
from openpi_core.transforms import (
    AbsoluteActions,
    DataTransform,
    DeltaActions,
    InjectDefaultPrompt,
    Normalize,
    NormStats,
    Unnormalize,
    compose,
    load_norm_stats,
)
from openpi_core.transforms.model import with_tokenizer
from openpi_core.transforms.normalize import FILE_NAME as NORM_STATS_FILE

logger = logging.getLogger(__name__)

PREFERRED_BACKENDS = ("torch", "jax")
"""The backend :func:`default_backend` picks, in order of preference, among those installed."""

TOKENIZER_ASSET = "assets/tokenizer.model"
"""A checkpoint that ships its own SentencePiece prompt tokenizer keeps it here."""
FAST_TOKENIZER_ASSET = "assets/fast_tokenizer"
"""A π0-FAST checkpoint that ships its own FAST action tokenizer keeps its files here."""

_OBSERVATION_KEYS = ("image", "image_mask", "state", "tokenized_prompt", "tokenized_prompt_mask", "token_ar_mask")


@attrs.frozen
class RealTimeGuidance:
    """What one real-time chunking request asks of the model, in model space.

    Attributes:
        prefix_actions: float32 ``[H, A]``: the robot's leftover actions mapped into
            model units and padded with zeros to the model's action dim and horizon.
        inference_delay: ``d``: rows ``0..d-1`` of the answer are held to the prefix.
        execution_horizon: ``s``: guidance ends at row ``H - s`` (the prefix's length
            unless the robot asked for less).
    """

    prefix_actions: np.ndarray
    inference_delay: int
    execution_horizon: int


@attrs.frozen
class GuidedObservation(Observation):
    """A prepared :class:`Observation` of a real-time chunking request, with its :class:`RealTimeGuidance`."""

    guidance: RealTimeGuidance = attrs.field(kw_only=True)


class Policy:
    """An embodiment's transforms and normalization wrapped around one backend model.

    Args:
        model: a backend model with ``config`` (``action_horizon``, ``action_dim``) and
            ``sample_actions(observation, noise=, num_steps=)`` returning ``[B, H, A]``
            actions (:class:`~openpi_core.models.api.AbstractPi0Model`) or ``[B, S]``
            tokens that the output transforms turn into actions
            (:class:`~openpi_core.models.api.AbstractPi0FASTModel`). When its
            ``sample_actions`` also takes ``prefix_actions`` ``[B, H, A]``,
            ``inference_delay`` ``[B]`` and ``execution_horizon`` (an int), the policy
            serves real-time chunking requests (:attr:`real_time_chunking`).
        embodiment: validates observations and gives the warm-up example.
        input_transforms: robot dict -> model-ready dict (``image``, ``image_mask``,
            ``state``, ``tokenized_prompt``…) for one unbatched observation.
        output_transforms: ``{"state", "actions"}`` of one item, in model units, back to
            the embodiment's data units (model outputs, Unnormalize, AbsoluteActions).
        robot_output_transforms: that dict -> the robot's (the embodiment's outputs).
        num_steps: flow-matching steps per action chunk (π0/π0.5) or the most tokens
            decoded (π0-FAST); None: the model's default (10 steps, or the config's
            ``max_decoding_steps``).
        seed: seeds the noise; item ``k`` of all calls together gets the ``k``-th draw,
            so a batch of items gives what the same items one by one would.
        metadata: sent to clients as the server's first frame.
    """

    def __init__(
        self,
        model: Any,
        *,
        embodiment: AbstractEmbodiment,
        input_transforms: Sequence[DataTransform],
        output_transforms: Sequence[DataTransform] = (),
        robot_output_transforms: Sequence[DataTransform] = (),
        num_steps: int | None = None,
        seed: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if num_steps is not None and num_steps < 1:
            raise InputError(f"num_steps should be >= 1, got {num_steps}")
        self.model = model
        self.embodiment = embodiment
        self.num_steps = num_steps
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._inputs = compose(input_transforms)
        self.default_prompt: str | None = next(
            (t.prompt for t in input_transforms if isinstance(t, InjectDefaultPrompt) and t.prompt is not None), None
        )
        """The prompt an observation without one gets (the first default of the input
        transforms), or None."""
        self._outputs = compose(output_transforms)
        self._robot_outputs = compose(robot_output_transforms)
        self._noise_shape = (int(model.config.action_horizon), int(model.config.action_dim))
        self.real_time_chunking = "prefix_actions" in inspect.signature(model.sample_actions).parameters
        """Whether the model guides its sampling with a prefix: requests with ``rtc/`` keys
        are served only then (π0 and π0.5 in a backend that implements it)."""
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()

    def prepare(self, observation: Mapping[str, Any]) -> Observation:
        """Validate one robot observation and run the input transforms on it.

        Returns:
            A batch-of-one :class:`Observation` that :meth:`run` stacks with others; a
            :class:`GuidedObservation` when the observation carries the ``rtc/`` keys
            of :mod:`openpi_core.wire` (real-time chunking).

        Raises:
            InputError: the observation does not match the embodiment's schema (missing
                or unknown keys, wrong shapes or dtypes, NaN), or a transform rejects it;
                the message names the key, what was expected and what came. Also
                ``rtc/`` keys that are malformed, or sent to a model that cannot use them.
        """
        if not isinstance(observation, Mapping):
            raise InputError(
                f"a {self.embodiment.name} observation should be a dict of arrays, got {type(observation).__name__}"
            )
        observation = dict(observation)
        request = self._pop_real_time_request(observation)
        self.embodiment.validate(observation)
        if request is not None:
            # The leftover takes the path of training actions: the inverse of the output path.
            observation["actions"] = request[0]
        try:
            data = self._inputs(observation)
            batched = {key: _add_batch_axis(data[key]) for key in _OBSERVATION_KEYS if key in data}
            prepared = Observation.from_dict(batched)
        except OpenpiError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise InputError(
                f"the {self.embodiment.name} observation could not be transformed: {type(error).__name__}: {error}"
            ) from error
        if request is None:
            return prepared
        _, delay, execution_horizon = request
        return GuidedObservation(
            **_fields(prepared),
            guidance=RealTimeGuidance(self._model_prefix(data["actions"]), delay, execution_horizon),
        )

    def _pop_real_time_request(self, observation: dict[str, Any]) -> tuple[np.ndarray, int, int] | None:
        """Remove the ``rtc/`` keys from ``observation``; their checked values, or None without them."""
        given = {key: observation.pop(key) for key in [k for k in observation if str(k).startswith("rtc/")]}
        if not given:
            return None
        unknown = sorted(set(given) - set(wire.RTC_KEYS))
        if unknown:
            raise InputError(f"unknown real-time chunking keys {unknown}; expected {list(wire.RTC_KEYS)}")
        missing = [key for key in (wire.RTC_PREFIX_ACTIONS, wire.RTC_INFERENCE_DELAY) if key not in given]
        if missing:
            raise InputError(
                f"real-time chunking needs both {wire.RTC_PREFIX_ACTIONS!r} and {wire.RTC_INFERENCE_DELAY!r}; "
                f"{missing[0]!r} is missing"
            )
        if not self.real_time_chunking:
            raise InputError(
                f"this policy's model ({type(self.model).__name__}) cannot guide its sampling with a prefix: "
                f"send observations without the {list(wire.RTC_KEYS)} keys"
            )
        horizon, robot_dim = self._noise_shape[0], int(self.embodiment.action_dim)
        prefix = np.asarray(given[wire.RTC_PREFIX_ACTIONS])
        if prefix.ndim != 2 or prefix.shape[1] != robot_dim or not 1 <= prefix.shape[0] <= horizon:
            raise InputError(
                f"{wire.RTC_PREFIX_ACTIONS!r} should have shape [h, {robot_dim}] with 1 <= h <= {horizon} "
                f"(the model's action horizon), got {list(prefix.shape)}"
            )
        if prefix.dtype.kind not in "fiu" or not np.all(np.isfinite(prefix)):
            raise InputError(f"{wire.RTC_PREFIX_ACTIONS!r} should hold finite numbers, got dtype {prefix.dtype}")
        length = prefix.shape[0]
        delay = _integer(given[wire.RTC_INFERENCE_DELAY], wire.RTC_INFERENCE_DELAY)
        if not 0 <= delay <= length:
            raise InputError(
                f"{wire.RTC_INFERENCE_DELAY!r} should be between 0 and the prefix length {length}, got {delay}"
            )
        execution_horizon = horizon - length
        if wire.RTC_EXECUTION_HORIZON in given:
            execution_horizon = _integer(given[wire.RTC_EXECUTION_HORIZON], wire.RTC_EXECUTION_HORIZON)
            if not horizon - length <= execution_horizon <= horizon - delay:
                raise InputError(
                    f"{wire.RTC_EXECUTION_HORIZON!r} should be between {horizon - length} (horizon {horizon} minus "
                    f"the prefix length {length}) and {horizon - delay} (horizon minus the delay {delay}), "
                    f"got {execution_horizon}"
                )
        return prefix.astype(np.float64), delay, execution_horizon

    def _model_prefix(self, actions: Any) -> np.ndarray:
        """The transformed leftover ``[h, A]`` padded with zero rows to ``[H, A]`` (float32)."""
        actions = np.asarray(actions, dtype=np.float32)
        horizon, width = self._noise_shape
        if actions.ndim != 2 or actions.shape[1] != width:
            raise OpenpiError(
                f"the input transforms turned {wire.RTC_PREFIX_ACTIONS!r} into shape {list(actions.shape)}, "
                f"not [h, {width}] (the model's action dim)"
            )
        return np.pad(actions, [(0, horizon - actions.shape[0]), (0, 0)])

    def batch_key(self, prepared: Observation) -> Hashable:
        """Items with equal keys (the same array shapes; real-time chunking or not, and
        then the same execution horizon) can be stacked in one :meth:`run`."""
        images = tuple(sorted((name, image.shape) for name, image in prepared.images.items()))
        prompt = None if prepared.tokenized_prompt is None else prepared.tokenized_prompt.shape
        guided = prepared.guidance.execution_horizon if isinstance(prepared, GuidedObservation) else None
        return images, prepared.state.shape, prompt, prepared.token_ar_mask is not None, guided

    def run(self, prepared: Sequence[Observation]) -> list[dict[str, Any]]:
        """One model call over ``prepared`` items (all of one :meth:`batch_key`).

        Returns:
            One dict per item, in order: ``actions`` float32 ``[H, robot action dim]``,
            ``state`` (the state the model saw, back in the embodiment's data units and
            padded to the model width, unless the embodiment's outputs give their own)
            and ``policy_timing`` ``{"infer_ms": the batched model call, in ms}``.

        Raises:
            InputError: the items have different batch keys.
        """
        if not prepared:
            return []
        keys = {self.batch_key(item) for item in prepared}
        if len(keys) != 1:
            raise InputError(
                f"run() stacks items of one batch_key; got {len(keys)} different ones: {sorted(map(str, keys))}"
            )
        batch = _stack(prepared)
        noise = self._draw_noise(len(prepared))
        start = time.perf_counter()
        options: dict[str, Any] = {} if self.num_steps is None else {"num_steps": self.num_steps}
        if isinstance(prepared[0], GuidedObservation):
            guidance = [item.guidance for item in prepared]
            options["prefix_actions"] = np.stack([g.prefix_actions for g in guidance])
            options["inference_delay"] = np.array([g.inference_delay for g in guidance], dtype=np.int32)
            options["execution_horizon"] = guidance[0].execution_horizon
        actions = np.asarray(self.model.sample_actions(batch, noise=noise, **options))
        infer_ms = (time.perf_counter() - start) * 1000.0
        if actions.ndim < 2 or actions.shape[0] != len(prepared):
            raise OpenpiError(
                f"the model returned actions of shape {list(actions.shape)} for a batch of {len(prepared)}"
            )
        results = []
        for index in range(len(prepared)):
            data = self._outputs({"state": batch.state[index], "actions": actions[index]})
            result = dict(self._robot_outputs(data))
            result.setdefault("state", data["state"])
            result["policy_timing"] = {"infer_ms": infer_ms}
            results.append(result)
        return results

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """Actions for one observation: ``run([prepare(observation)])[0]``."""
        return self.run([self.prepare(observation)])[0]

    def warmup(self) -> None:
        """One inference on the embodiment's example observation (compiles, loads the tokenizer).

        With a :attr:`default_prompt` the example goes without its own made-up prompt, so
        the warm-up tokenizes the prompt the policy will really see (and a prompt that
        does not fit the model's ``max_token_len`` warns only when someone sends it).
        """
        example = dict(self.embodiment.example(0))
        if self.default_prompt is not None:
            example.pop("prompt", None)
        self.infer(example)

    def _draw_noise(self, count: int) -> np.ndarray:
        with self._rng_lock:
            return np.stack([self._rng.standard_normal(self._noise_shape, dtype=np.float32) for _ in range(count)])


def _add_batch_axis(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _add_batch_axis(value) for key, value in tree.items()}
    return np.asarray(tree)[None]


def _fields(observation: Observation) -> dict[str, Any]:
    """The :class:`Observation` fields of ``observation`` (of a subclass too), by name."""
    return {field.name: getattr(observation, field.name) for field in attrs.fields(Observation)}


def _integer(value: Any, key: str) -> int:
    """``value`` as an int: a Python or numpy integer, or an integer array of one element."""
    array = np.asarray(value)
    integral = isinstance(value, numbers.Integral) or array.dtype.kind in "iu"
    if array.size != 1 or not integral or isinstance(value, bool | np.bool_):
        raise InputError(f"{key!r} should be an integer, got {short_repr(value)}")
    return int(array.item())


def _stack(items: Sequence[Observation]) -> Observation:
    """The items as one plain :class:`Observation` (guidance, if any, travels separately)."""
    if len(items) == 1:
        return Observation(**_fields(items[0]))

    def cat(field: str) -> np.ndarray | None:
        values = [getattr(item, field) for item in items]
        return None if values[0] is None else np.concatenate(values)

    first = items[0]
    return Observation(
        images={name: np.concatenate([item.images[name] for item in items]) for name in first.images},
        image_masks={name: np.concatenate([item.image_masks[name] for item in items]) for name in first.image_masks},
        state=cat("state"),
        tokenized_prompt=cat("tokenized_prompt"),
        tokenized_prompt_mask=cat("tokenized_prompt_mask"),
        token_ar_mask=cat("token_ar_mask"),
        token_loss_mask=cat("token_loss_mask"),
    )


def default_backend() -> str:
    """The first installed backend of :data:`PREFERRED_BACKENDS`, else any installed one.

    Raises:
        UnknownNameError: no backend is installed.
    """
    installed = names("backend")
    for name in (*PREFERRED_BACKENDS, *installed):
        if name in installed:
            return name
    raise UnknownNameError(
        "no backend is installed; install one: pip install openpi-backend-torch (or openpi-backend-jax)"
    )


def create_policy(
    config: str | NamedConfig | None = None,
    *,
    checkpoint: str | Path | Mapping[str, np.ndarray] | None = None,
    embodiment: str | AbstractEmbodiment | None = None,
    model_config: Any = None,
    backend: str | None = None,
    dtype: str | None = None,
    num_steps: int | None = None,
    default_prompt: str | None = None,
    norm_stats: str | Path | Mapping[str, NormStats] | None = None,
    tokenizer: str | Path | None = None,
    fast_tokenizer: str | Path | None = None,
    seed: int = 0,
) -> Policy:
    """Assemble a :class:`Policy` from a preset or from explicit parts.

    Args:
        config: a preset (:class:`NamedConfig` or its registered name, e.g.
            ``pi0_aloha_sim``), which gives every part below that is not passed.
        checkpoint: a checkpoint path or URL (``gs://``, ``hf://``, ``https://``,
            ``file://``) in any format :func:`openpi_core.checkpoints.load_checkpoint`
            reads, or a mapping of parameter arrays; default: the preset's.
        embodiment: the robot (a name or an object); default: the preset's.
        model_config: overrides the preset's model config; with neither, the config
            stored with (or inferred from) the checkpoint is used.
        backend: ``torch``, ``jax``…; default :func:`default_backend`.
        dtype: compute dtype (``float32`` or ``bfloat16``); default the config's.
        num_steps: flow-matching steps per action chunk, or π0-FAST's most decoded
            tokens; default the model's (see :class:`Policy`).
        default_prompt: used when an observation has no ``prompt``; wins over the preset's.
        norm_stats: a ``norm_stats.json`` file or its folder (path or URL), or the stats
            themselves. Default, first found: ``<checkpoint>/assets/<asset id>/`` (openpi's
            layout, asset id from the preset), ``<checkpoint>/norm_stats.json`` (a native
            checkpoint's own), the preset's ``norm_stats``.
        tokenizer: a SentencePiece prompt tokenizer (path or URL); default
            ``<checkpoint>/assets/tokenizer.model`` when the checkpoint ships one, else
            the preset's, else the PaliGemma tokenizer.
        fast_tokenizer: π0-FAST's action tokenizer directory (path or URL); default
            ``<checkpoint>/assets/fast_tokenizer`` when the checkpoint ships one, else
            the published ``physical-intelligence/fast``.
        seed: seeds the sampling noise.

    Raises:
        UnknownNameError: the preset, embodiment, backend or model family is not installed.
        InputError: parts are missing or do not fit together (each message names what
            was expected and what came); NormStatsError when no norm stats are found.
        WeightsError: the checkpoint does not fit the model config.
        DownloadError: a URL cannot be fetched.
    """
    preset = get_config(config) if isinstance(config, str) else config
    checkpoint = checkpoint if checkpoint is not None else (preset.checkpoint if preset else None)
    if checkpoint is None:
        raise InputError("create_policy needs a checkpoint: pass checkpoint= or a preset that names one")
    embodiment = embodiment if embodiment is not None else (preset.embodiment if preset else None)
    if embodiment is None:
        raise InputError("create_policy needs an embodiment: pass embodiment= (e.g. 'aloha') or a preset")
    robot = get_embodiment(embodiment) if isinstance(embodiment, str) else embodiment
    backend_name = backend or default_backend()
    model_backend = get_backend(backend_name)

    checkpoint_dir: Path | None = None
    if not isinstance(checkpoint, Mapping):
        checkpoint_dir = maybe_download(checkpoint) if is_url(str(checkpoint)) else Path(checkpoint).expanduser()
    stored_config, params = load_checkpoint(
        checkpoint if checkpoint_dir is None else checkpoint_dir,
        model_config if model_config is not None else (preset.model_config if preset else None),
    )
    model_config = attrs.evolve(stored_config, dtype=dtype) if dtype else stored_config
    family = model_config.family
    if preset is not None and preset.family != family:
        raise InputError(f"preset {preset.name!r} is for family {preset.family!r}, but the model config is {family!r}")

    stats = _resolve_norm_stats(norm_stats, checkpoint_dir, preset)
    use_quantiles = family != "pi0"
    model_transforms = get_model_spec(family).model_transforms(model_config)
    tokenizers = (
        tokenizer or _shipped_asset(checkpoint_dir, TOKENIZER_ASSET) or (preset.tokenizer if preset else None),
        model_config.vocab_size,
        fast_tokenizer or _shipped_asset(checkpoint_dir, FAST_TOKENIZER_ASSET),
    )
    model_inputs = [with_tokenizer(t, *tokenizers) for t in model_transforms.inputs]
    model_outputs = [with_tokenizer(t, *tokenizers) for t in model_transforms.outputs]

    robot_transforms = robot.transforms(family)
    delta_in: list[DataTransform] = []
    delta_out: list[DataTransform] = []
    if preset is not None and preset.delta_actions:
        mask = getattr(robot, "delta_action_mask", None)
        if mask is None:
            raise InputError(
                f"preset {preset.name!r} predicts delta actions, but {robot.name!r} has no delta_action_mask"
            )
        delta_in, delta_out = [DeltaActions(mask)], [AbsoluteActions(mask)]

    model = model_backend.load_model(params, model_config)
    policy = Policy(
        model,
        embodiment=robot,
        input_transforms=[
            InjectDefaultPrompt(default_prompt),
            *robot_transforms.inputs,
            *(preset.extra_transforms if preset else ()),
            *delta_in,
            Normalize(stats, use_quantiles=use_quantiles),
            InjectDefaultPrompt(preset.default_prompt if preset else None),
            *model_inputs,
        ],
        output_transforms=[*model_outputs, Unnormalize(stats, use_quantiles=use_quantiles), *delta_out],
        robot_output_transforms=robot_transforms.outputs,
        num_steps=num_steps,
        seed=seed,
        metadata={
            "config": preset.name if preset else None,
            "embodiment": robot.name,
            "family": family,
            "backend": backend_name,
            "dtype": model_config.dtype,
            "action_horizon": int(model_config.action_horizon),
            "action_dim": int(robot.action_dim),
            "num_steps": num_steps,
        },
    )
    policy.metadata["real_time_chunking"] = policy.real_time_chunking
    logger.info("policy ready: %s", policy.metadata)
    return policy


def _resolve_norm_stats(
    source: str | Path | Mapping[str, NormStats] | None, checkpoint_dir: Path | None, preset: NamedConfig | None
) -> dict[str, NormStats]:
    if isinstance(source, Mapping):
        return dict(source)
    if source is not None:
        return _load_norm_stats(source)
    tried = []
    if checkpoint_dir is not None:
        candidates = [checkpoint_dir / "assets" / preset.asset_id] if preset and preset.asset_id else []
        candidates.append(checkpoint_dir)
        for folder in candidates:
            if (folder / NORM_STATS_FILE).is_file():
                return load_norm_stats(folder)
            tried.append(str(folder / NORM_STATS_FILE))
    if preset is not None and preset.norm_stats is not None:
        return _load_norm_stats(preset.norm_stats)
    raise NormStatsError(
        f"no norm stats found; looked for {tried or 'nothing (no checkpoint folder)'} and no preset names any. "
        f"Pass norm_stats= (pi run serve --norm-stats) with a {NORM_STATS_FILE} or its folder"
    )


def _load_norm_stats(source: str | Path) -> dict[str, NormStats]:
    text = str(source)
    if is_url(text):
        url = text if text.endswith(".json") else f"{text.rstrip('/')}/{NORM_STATS_FILE}"
        return load_norm_stats(maybe_download(url))
    return load_norm_stats(Path(text).expanduser())


def _shipped_asset(checkpoint_dir: Path | None, relative: str) -> Path | None:
    """``<checkpoint_dir>/<relative>`` when the checkpoint ships that file or folder."""
    if checkpoint_dir is None or not (checkpoint_dir / relative).exists():
        return None
    return checkpoint_dir / relative
