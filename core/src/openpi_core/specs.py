"""What plugins register: backends, model specs, embodiments, named configs and
checkpoint formats.

Every registered object has a unique ``name`` within its kind. Abstract classes
here are named ``Abstract…``; plugins subclass them (or, for the attrs classes,
instantiate them) and hand the object to the ``register`` callable of a hook.
"""

import abc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.schema import ArraySpec, validate
from openpi_core.transforms import DataTransform, Group


class AbstractEmbodiment(abc.ABC):
    """One robot: what it sends, how that becomes model input, and what it gets back.

    Subclasses set the class attributes and implement the methods. The transforms
    work on one unbatched observation dict in the robot's own key names.
    """

    name: str
    description: str
    action_dim: int
    """Number of action dimensions the robot consumes (after the output transforms)."""
    observation_schema: Mapping[str, ArraySpec]
    """Flattened key path -> spec of what the robot sends for one observation."""

    @abc.abstractmethod
    def transforms(self, model_family: str) -> Group:
        """Input transforms (robot dict -> model-ready dict with ``image``,
        ``image_mask``, ``state``, optional ``actions`` and ``prompt``) and output
        transforms (``actions`` of the model width -> robot actions), for the given
        model family (``pi0``, ``pi05`` or ``pi0_fast``)."""

    @abc.abstractmethod
    def repack_transforms(self) -> Group:
        """Maps a LeRobot dataset sample's keys to the robot's observation keys."""

    @abc.abstractmethod
    def example(self, seed: int = 0) -> dict[str, Any]:
        """A random but valid observation in the robot's format, for tests."""

    default_prompt: str | None = None
    """Prompt injected when an observation carries none."""

    def validate(self, observation: Mapping[str, Any]) -> None:
        """Raise :class:`~openpi_core.errors.InputError` if ``observation`` does not
        match :attr:`observation_schema`."""
        validate(observation, self.observation_schema, what=f"{self.name} observation")


class AbstractBackend(abc.ABC):
    """A numerical backend (jax, torch): builds models of the families it implements."""

    name: str
    families: tuple[str, ...]
    """Model families this backend can build; empty until it implements one."""

    @abc.abstractmethod
    def load_model(self, path_or_params: str | Path | Mapping[str, np.ndarray], config: Any = None) -> Any:
        """Build a model from a checkpoint path or a mapping of parameter arrays."""

    def create_trainer(self, model_config: Any, train_config: Any, params: Mapping[str, np.ndarray]) -> Any:
        """A :class:`~openpi_core.training.api.AbstractTrainer` starting from ``params``
        (canonical names, plus LoRA adapters when ``train_config`` asks for them)."""
        raise NotImplementedError(f"backend {self.name!r} cannot train")


@attrs.frozen
class ModelSpec:
    """A model family, described without any framework.

    ``weight_schema(config)`` returns canonical parameter name -> shape;
    ``model_transforms(config)`` returns the transforms between a robot-neutral
    data dict and an :class:`~openpi_core.observation.Observation`.
    """

    family: str
    config_type: type
    weight_schema: Callable[[Any], Mapping[str, tuple[int, ...]]]
    model_transforms: Callable[[Any], Group]
    description: str = ""

    @property
    def name(self) -> str:
        return self.family


@attrs.frozen
class NamedConfig:
    """A preset: a model config, an embodiment, where norm stats and weights come from.

    ``norm_stats`` is the directory holding ``norm_stats.json``; for openpi's presets it
    is ``<checkpoint>/assets/<asset id>`` (see :attr:`asset_id`). ``delta_actions``
    (openpi's ``use_delta_joint_actions`` / ``extra_delta_transform``) says the model
    predicts the embodiment's ``delta_action_mask`` dimensions relative to the current
    state, so a policy wraps ``DeltaActions`` / ``AbsoluteActions`` around the model.
    ``tokenizer`` is the SentencePiece prompt tokenizer (path or URL) of a preset whose
    model has its own small vocabulary; None means PaliGemma's.
    """

    name: str
    family: str
    model_config: Any
    embodiment: str
    description: str = ""
    checkpoint: str | None = None
    norm_stats: str | None = None
    default_prompt: str | None = None
    extra_transforms: Sequence[DataTransform] = ()
    delta_actions: bool = False
    tokenizer: str | None = None

    @property
    def asset_id(self) -> str | None:
        """The norm stats' folder under the checkpoint's ``assets/`` (openpi's asset id,
        e.g. ``trossen``), so the same stats are found inside a fine-tuned checkpoint
        that copies them there; None when ``norm_stats`` lies elsewhere."""
        if self.checkpoint is None or self.norm_stats is None:
            return None
        prefix = f"{self.checkpoint.rstrip('/')}/assets/"
        asset_id = self.norm_stats.removeprefix(prefix).strip("/")
        return asset_id if self.norm_stats.startswith(prefix) and asset_id else None


class AbstractCheckpointFormat(abc.ABC):
    """Reads (and optionally writes) one on-disk weight format.

    A format converts at its boundary: :meth:`read` returns and :meth:`write` takes
    parameters under their canonical names and layouts
    (:mod:`openpi_core.models.pi0_weights`), with the model config. ``progress``,
    when given, is called with each tensor's name once that tensor is done.
    """

    name: str
    description: str = ""

    @abc.abstractmethod
    def detect(self, path: Path) -> bool:
        """Whether ``path`` looks like a checkpoint of this format (cheap: headers only)."""

    @abc.abstractmethod
    def read(
        self, path: Path, config: Any = None, *, progress: Callable[[str], None] | None = None
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """Load ``(config, canonical params)``. ``config`` None: the one stored with
        the checkpoint, else one inferred from the shapes."""

    def write(
        self,
        path: Path,
        config: Any,
        params: Mapping[str, np.ndarray],
        *,
        overwrite: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Save canonical ``params`` of ``config`` at ``path``, replacing it only with ``overwrite``."""
        raise NotImplementedError(f"checkpoint format {self.name!r} cannot be written")


@attrs.frozen
class DemoOptions:
    """What ``pi demo`` passes to a :class:`Demo`'s ``run``.

    Attributes:
        backend: the backend to load the demo's policy with; None: the default one.
        episodes: how many episodes to run.
        video_dir: where to write a video per episode; None: write none.
        progress: progress bars on stderr: True always, False never, None on terminals only
            (tqdm's ``disable=None``).
        echo: prints one line about what is happening (``pi demo --json`` sends these to
            stderr, so stdout holds only the JSON).
    """

    backend: str | None = None
    episodes: int = 3
    video_dir: Path | None = None
    progress: bool | None = None
    echo: Callable[[str], object] = print


@attrs.frozen
class DemoResult:
    """What a :class:`Demo` measured: ``summary`` for people (a table), ``data`` for
    scripts (JSON-serializable; ``pi demo --json`` prints it as ``results``)."""

    summary: str
    data: Mapping[str, Any]


def _nothing_missing() -> str | None:
    return None


@attrs.frozen
class Demo:
    """A closed-loop demonstration that ``pi demo`` runs: a trained policy driving a
    simulated robot, say.

    ``run(options)`` runs it with :class:`DemoOptions` and returns a :class:`DemoResult`;
    it imports its heavy dependencies itself. ``missing()`` says, cheaply and before any
    run, what must be installed for it (a sentence with the ``pip install`` line), or
    None when it can run.
    """

    name: str
    description: str
    run: Callable[[DemoOptions], DemoResult]
    missing: Callable[[], str | None] = _nothing_missing
