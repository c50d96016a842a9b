"""A numpy trainer and loader that honour the training contracts, for tests of the loop,
the checkpoints and ``pi run train`` without a backend.

:class:`LinearTrainer` trains a linear velocity model that reads only
``action_out_proj.kernel`` ``[W, A]`` and ``action_out_proj.bias`` ``[A]``: the features
``[x_t, state[:A], t]`` (zero-padded to ``W``) times the kernel, plus the bias. It
carries every other parameter of the weight schema unchanged, so its
:meth:`~LinearTrainer.inference_params` make a complete checkpoint. The update is SGD with
momentum 0.9, global-norm clipping and decoupled weight decay, then EMA.

The module is also a plugin that registers :class:`LinearBackend` (``linear``)::

    PluginManager(entry_points=False, plugins=[("linear", openpi_core.training.testing)])

:func:`tiny_pi0_config` and :func:`write_training_files` give ``pi run train`` a model
config, a dataset and a prompt tokenizer without a download.
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core import hookimpl
from openpi_core.errors import InputError
from openpi_core.models.config import GEMMA_VARIANTS, Pi0Config, SiglipConfig
from openpi_core.observation import Observation
from openpi_core.specs import AbstractBackend
from openpi_core.training.api import AbstractTrainer
from openpi_core.training.config import TrainConfig
from openpi_core.training.lora import adapters, is_trainable

USED = ("action_out_proj.kernel", "action_out_proj.bias")
MOMENTUM = 0.9


class LinearTrainer(AbstractTrainer):
    def __init__(self, model_config: Pi0Config, train_config: TrainConfig, params: Mapping[str, np.ndarray]) -> None:
        width, action_dim = np.shape(params[USED[0]])
        if width < 2 * action_dim + 1:
            raise InputError(f"LinearTrainer needs width >= 2 * action_dim + 1, got {width} and {action_dim}")
        self.train_config = train_config
        self.params = {name: np.array(value, dtype=np.float32) for name, value in params.items()}
        self.trainable = [name for name in USED if is_trainable(name, train_config)]
        self.momentum = {name: np.zeros_like(self.params[name]) for name in self.trainable}
        self.ema = None if train_config.ema_decay is None else {k: v.copy() for k, v in self.params.items()}
        self.count = 0

    def _grads(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        kernel, bias = (self.params[name] for name in USED)
        batch, horizon, action_dim = actions.shape
        t = time[:, None, None]
        x_t = t * noise + (1.0 - t) * actions
        state = np.broadcast_to(observation.state[:, None, :action_dim], x_t.shape)
        features = np.concatenate([x_t, state, np.broadcast_to(t, (batch, horizon, 1))], axis=-1)
        features = np.pad(features, ((0, 0), (0, 0), (0, kernel.shape[0] - features.shape[-1])))
        error = features @ kernel + bias - (noise - actions)
        d_out = 2.0 * error / error.size
        grads = {USED[0]: np.einsum("bhw,bha->wa", features, d_out), USED[1]: d_out.sum(axis=(0, 1))}
        return float(np.mean(error**2)), grads

    def step(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray, lr: float
    ) -> dict[str, float]:
        loss, grads = self._grads(observation, actions, noise, time)
        grad_norm = float(np.sqrt(sum(np.sum(grads[name] ** 2) for name in self.trainable)))
        clip = self.train_config.optimizer.clip_gradient_norm
        factor = min(1.0, clip / max(grad_norm, 1e-12))
        decay = self.train_config.optimizer.weight_decay
        for name in self.trainable:
            self.momentum[name] = MOMENTUM * self.momentum[name] + factor * grads[name]
            self.params[name] = self.params[name] - lr * (self.momentum[name] + decay * self.params[name])
        self.count += 1
        if self.ema is not None:
            rate = self.train_config.ema_decay
            for name in self.trainable:
                self.ema[name] = rate * self.ema[name] + (1.0 - rate) * self.params[name]
        return {"loss": loss, "grad_norm": grad_norm}

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"params/{name}": value.copy() for name, value in self.params.items()}
        state |= {f"opt/mu/{name}": value.copy() for name, value in self.momentum.items()}
        state["opt/count"] = np.asarray(self.count, dtype=np.int64)
        if self.ema is not None:
            state |= {f"ema/{name}": value.copy() for name, value in self.ema.items()}
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.params = {name: np.array(state[f"params/{name}"]) for name in self.params}
        self.momentum = {name: np.array(state[f"opt/mu/{name}"]) for name in self.momentum}
        self.count = int(state["opt/count"])
        if self.ema is not None:
            self.ema = {name: np.array(state[f"ema/{name}"]) for name in self.ema}

    def inference_params(self) -> dict[str, np.ndarray]:
        source = self.params if self.ema is None else self.ema
        merged = {name: value.astype(np.float32) for name, value in source.items() if not name.endswith(".lora_a")}
        for prefix, lora in adapters(self.train_config).items():
            for name in [n for n in merged if n.startswith(f"{prefix}.") and n.endswith(".lora_b")]:
                base = name.removesuffix(".lora_b")
                merged[base] = merged[base] + lora.scale * (source[f"{base}.lora_a"] @ merged.pop(name))
        return merged


class LinearBackend(AbstractBackend):
    """A backend that cannot run models but trains with :class:`LinearTrainer`."""

    name = "linear"
    families = ("pi0", "pi05")

    def load_model(self, path_or_params: Any, config: Any = None) -> Any:
        raise NotImplementedError("the linear test backend only trains")

    def create_trainer(self, model_config: Any, train_config: Any, params: Mapping[str, np.ndarray]) -> LinearTrainer:
        return LinearTrainer(model_config, train_config, params)


@hookimpl
def openpi_register_backends(register):
    register(LinearBackend())


class FakeLoader:
    """Seeded batches in ``Observation.to_dict()`` layout plus ``actions``, with
    ``actions = state @ mixing`` (learnable) and a resumable position.

    One epoch is ``batches_per_epoch`` batches; each epoch's batches come from the seed
    ``(seed, epoch, index)``, so the stream is a function of the position alone.
    """

    def __init__(
        self,
        model_config: Pi0Config,
        batch_size: int,
        *,
        seed: int = 0,
        batches_per_epoch: int = 4,
        image_size: tuple[int, int] = (8, 8),
    ) -> None:
        self.config = model_config
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = batches_per_epoch
        self.image_size = image_size
        self.epoch, self.index = 0, 0
        dims = model_config.action_dim
        self.mixing = np.random.default_rng([seed, 99]).normal(0.0, 0.5, (dims, dims)).astype(np.float32)

    def batch(self, epoch: int, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, epoch, index])
        size, config = self.batch_size, self.config
        state = rng.normal(size=(size, config.action_dim)).astype(np.float32)
        actions = np.repeat((state @ self.mixing)[:, None, :], config.action_horizon, axis=1)
        image = rng.uniform(-1.0, 1.0, (size, *self.image_size, 3)).astype(np.float32)
        tokens = rng.integers(1, config.vocab_size, (size, config.max_token_len)).astype(np.int32)
        return {
            "image": {key: image for key in config.image_keys},
            "image_mask": {key: np.ones(size, bool) for key in config.image_keys},
            "state": state,
            "tokenized_prompt": tokens,
            "tokenized_prompt_mask": np.ones_like(tokens, dtype=bool),
            "actions": actions,
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        while self.index < self.batches_per_epoch:
            batch = self.batch(self.epoch, self.index)
            self.index += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def tiny_pi0_config(action_horizon: int = 4) -> Pi0Config:
    """A float32 π0 of dummy Gemmas and a one-layer SigLIP on 28-px images, action dim 16."""
    return Pi0Config(
        llm=GEMMA_VARIANTS["dummy"],
        action_expert=GEMMA_VARIANTS["dummy"],
        vision=SiglipConfig(width=16, depth=1, mlp_dim=32, num_heads=2, image_size=(28, 28)),
        vocab_size=64,
        action_dim=16,
        action_horizon=action_horizon,
        max_token_len=16,
        dtype="float32",
    )


def write_training_files(
    root: Path,
    config: Pi0Config,
    prompts: Sequence[str],
    *,
    vocab_size: int,
    episodes: int,
    frames_per_episode: int,
) -> Path:
    """Write into ``root`` what ``pi run train`` reads, and return ``root``.

    ``dataset/``: a synthetic LeRobot dataset (16-px images, 10 fps; needs the data extra);
    ``tok.model``: a SentencePiece prompt tokenizer of ``vocab_size`` pieces trained on
    ``prompts``; ``tiny.json``: ``config`` for ``--model-config``.
    """
    import sentencepiece

    from openpi_core.data.testing import make_synthetic_dataset
    from openpi_core.serialization import unstructure

    make_synthetic_dataset(
        root / "dataset", episodes=episodes, frames_per_episode=frames_per_episode, image_size=(16, 16), fps=10
    )
    (root / "corpus.txt").write_text("\n".join(list(prompts) * 20))
    sentencepiece.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "tok"), vocab_size=vocab_size, minloglevel=2
    )
    (root / "tiny.json").write_text(json.dumps(unstructure(config)))
    return root
