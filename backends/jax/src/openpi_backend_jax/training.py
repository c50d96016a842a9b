"""Training π0, π0.5 and π0-FAST in JAX: the trainer behind
:class:`openpi_core.training.api.AbstractTrainer`.

One step is openpi's: the mean loss of the family (flow matching for π0/π0.5, the
next-token cross-entropy on the FAST token sequence for π0-FAST), its gradient with
respect to the trainable parameters, ``clip_by_global_norm`` then AdamW (``scale_by_adam``, decoupled
weight decay on every trainable parameter, as openpi creates it with no decay mask),
then the EMA update ``ema = d * ema + (1 - d) * params``. The learning rate is a traced
argument, so the loop's schedule never recompiles the step.

Parameters are float32 master weights; ``TrainConfig.precision`` ``bfloat16`` builds
the model with a bfloat16 compute dtype, so every matmul casts its weights down
(:mod:`openpi_backend_jax.layers`) while gradients, optimizer moments and EMA stay
float32. Frozen parameters (:func:`openpi_core.training.lora.is_trainable` false) are
kept apart from the trained ones: they get no gradient, no optimizer state and no EMA.
``TrainConfig.gradient_checkpointing`` changes nothing here: the layer scans of
SigLIP and Gemma always rematerialise.

Parallelism: a ``Mesh`` of shape ``[devices / fsdp_devices, fsdp_devices]`` with axes
``("batch", "fsdp")`` (openpi's). The batch is split over both axes; with
``fsdp_devices > 1`` every parameter (and its optimizer moments and EMA) of at least
``fsdp_min_bytes`` and two or more axes is split along its largest axis divisible by
``fsdp_devices``; the rest is replicated. XLA inserts the all-gathers and the gradient
reductions.

Multi-host: launch one process per host with ``JAX_COORDINATOR_ADDRESS``
(``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` set, or
under SLURM / Open MPI; :func:`initialize_distributed` (called by
:meth:`~openpi_backend_jax.backend.JaxBackend.create_trainer` before any device is
touched) then runs ``jax.distributed.initialize()`` and the mesh spans every host's
devices. Each process passes its own share of the batch to :meth:`JaxTrainer.step`;
:meth:`JaxTrainer.state_dict` gathers full arrays on every process.
"""

import os
from collections.abc import Callable, Mapping, Sequence

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from openpi_backend_jax import weights
from openpi_backend_jax.gemma import merge_lora
from openpi_backend_jax.layers import Array
from openpi_backend_jax.pi0 import Inputs, Pi0, Pi0Model
from openpi_backend_jax.pi0_fast import FASTInputs, Pi0FAST, Pi0FASTModel
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.api import check_params
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.models.pi0_weights import check_against_schema, pi0_fast_weight_schema, pi0_weight_schema
from openpi_core.observation import Observation
from openpi_core.training.api import AbstractTrainer
from openpi_core.training.config import AdamWConfig, TrainConfig
from openpi_core.training.lora import adapters, init_lora, is_trainable, lora_schema

BATCH_AXIS = "batch"
FSDP_AXIS = "fsdp"
DATA_AXES = (BATCH_AXIS, FSDP_AXIS)
"""The batch is split over both mesh axes."""
FSDP_MIN_BYTES = 4 * 2**20
"""Smaller parameters stay replicated under FSDP (openpi's threshold, 4 MiB)."""
PRECISIONS = ("bfloat16", "float32")
TRAINED_FAMILIES = ("pi0", "pi05", "pi0_fast")
_ADAM = 1
"""Index of ``scale_by_adam``'s state in the :func:`optimizer` chain."""


def initialize_distributed() -> None:
    """Join a multi-host run: ``jax.distributed.initialize()`` when this process was
    started as one of several (``JAX_COORDINATOR_ADDRESS``, a multi-task SLURM step,
    or ``mpirun``) and jax is not yet initialised; otherwise nothing."""
    launched = (
        "JAX_COORDINATOR_ADDRESS" in os.environ
        or int(os.environ.get("SLURM_NTASKS", "1")) > 1
        or "OMPI_MCA_orte_hnp_uri" in os.environ
    )
    if launched and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def optimizer(config: AdamWConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then ``optax.adamw`` without its learning-rate scaling:
    the step multiplies the result by ``-lr`` itself, so ``lr`` can change every step."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_gradient_norm),
        optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
        optax.add_decayed_weights(config.weight_decay),
    )


class TrainState(eqx.Module):
    """What a step updates. Each tree has the structure of the model (:class:`Pi0` or
    :class:`Pi0FAST`) with None where a parameter is frozen.

    Attributes:
        params: trainable parameters, float32.
        opt_state: the state of :func:`optimizer` over ``params`` (``count``, ``mu``, ``nu``).
        ema: exponential moving average of ``params``, or None without EMA.
    """

    params: Pi0 | Pi0FAST
    opt_state: optax.OptState
    ema: Pi0 | Pi0FAST | None


def pi0_loss(model: Pi0, batch: tuple[Inputs, Array, Array, Array]) -> Array:
    """Mean flow-matching loss of a batch ``(inputs, actions [B, H, A], noise [B, H, A], time [B])``."""
    inputs, actions, noise, time = batch
    return jnp.mean(jax.vmap(model.loss)(inputs, actions, noise, time))


def pi0_fast_loss(model: Pi0FAST, inputs: FASTInputs) -> Array:
    """Mean next-token cross-entropy of a batch of FAST token sequences (the action
    tokens are in ``inputs.tokens``, scored where ``inputs.loss_mask`` is set)."""
    return jnp.mean(jax.vmap(model.loss)(inputs))


@eqx.filter_jit(donate="all-except-first")
@eqx.debug.assert_max_traces(max_traces=None)
def train_step(
    frozen: eqx.Module,
    state: TrainState,
    batch: object,
    lr: Array,
    loss_fn: Callable[[eqx.Module, object], Array],
    adamw: AdamWConfig,
    ema_decay: float | None,
    shardings: TrainState,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step of the model ``eqx.combine(state.params, frozen)`` on the scalar
    ``loss_fn(model, batch)`` (:func:`pi0_loss` for π0), with learning rate ``lr`` (a
    float32 scalar).

    ``loss_fn``, ``adamw``, ``ema_decay`` and ``shardings`` (a :class:`TrainState` of
    ``NamedSharding``, imposed on the new state so the next call sees the same
    layout) are static. Everything but ``frozen`` is donated. Returns the new state
    and float32 scalars ``loss`` (before the update) and ``grad_norm`` (before
    clipping). Counts its traces (``eqx.debug.get_num_traces``).
    """
    loss, grads = eqx.filter_value_and_grad(lambda params: loss_fn(eqx.combine(params, frozen), batch))(state.params)
    updates, opt_state = optimizer(adamw).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
    ema = state.ema
    if ema_decay is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    new_state = jax.lax.with_sharding_constraint(TrainState(params, opt_state, ema), shardings)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def make_mesh(fsdp_devices: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """``[len(devices) / fsdp_devices, fsdp_devices]`` mesh with axes ``("batch", "fsdp")``
    over ``devices`` (default: every device of every process).

    Raises:
        InputError: ``fsdp_devices`` does not divide the number of devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if fsdp_devices < 1 or len(devices) % fsdp_devices:
        raise InputError(f"fsdp_devices should divide the number of devices ({len(devices)}), got {fsdp_devices}")
    grid = np.array(devices, dtype=object).reshape(len(devices) // fsdp_devices, fsdp_devices)
    return Mesh(grid, DATA_AXES)


def fsdp_spec(shape: tuple[int, ...], itemsize: int, fsdp: int, min_bytes: int) -> PartitionSpec:
    """Where an array of ``shape`` lives: split on its largest axis divisible by ``fsdp``
    when it has two or more axes and at least ``min_bytes``; else replicated."""
    if fsdp == 1 or len(shape) < 2 or int(np.prod(shape)) * itemsize < min_bytes:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[axis] % fsdp == 0:
            return PartitionSpec(*(FSDP_AXIS if i == axis else None for i in range(len(shape))))
    return PartitionSpec()


def _fetch(array: Array) -> np.ndarray:
    """A device array as a new host numpy array (gathered across processes if need be)."""
    if not array.is_fully_addressable:
        array = multihost_utils.process_allgather(array, tiled=True)
    return np.array(array, copy=True)


class JaxTrainer(AbstractTrainer):
    """A π0, π0.5 or π0-FAST model's parameters, AdamW state and EMA, on a device mesh.

    Args:
        model_config: the model; its ``dtype`` is ignored (``train_config.precision``
            chooses the compute dtype, parameters are float32).
        train_config: optimizer, EMA, LoRA, precision and FSDP settings.
        params: canonical float32 parameters of ``model_config``'s schema, plus the
            LoRA adapters ``train_config`` asks for (drawn with
            :func:`~openpi_core.training.lora.init_lora` from ``train_config.seed`` when
            none is given).
        devices: the devices of the mesh (default: all of them).
        fsdp_min_bytes: parameters smaller than this are never split.

    Raises:
        InputError: unknown precision, or ``fsdp_devices`` does not fit the devices.
        WeightsError: ``params`` miss, add or mis-shape a parameter, or are not finite.
    """

    def __init__(
        self,
        model_config: Pi0Config | Pi0FASTConfig,
        train_config: TrainConfig,
        params: Mapping[str, np.ndarray],
        *,
        devices: Sequence[jax.Device] | None = None,
        fsdp_min_bytes: int = FSDP_MIN_BYTES,
    ):
        if train_config.precision not in PRECISIONS:
            raise InputError(
                f"TrainConfig.precision should be one of {list(PRECISIONS)}, got {train_config.precision!r}"
            )
        self.config = attrs.evolve(model_config, dtype=train_config.precision)
        self.train_config = train_config
        self._fast = isinstance(model_config, Pi0FASTConfig)
        schema = (pi0_fast_weight_schema if self._fast else pi0_weight_schema)(self.config)
        adapter_schema = lora_schema(schema, train_config)
        params = dict(params)
        if adapter_schema and not any(name in params for name in adapter_schema):
            params.update(init_lora(schema, train_config, train_config.seed))
        params = check_against_schema(params, {**schema, **adapter_schema})
        check_params(params)

        module_type = Pi0FAST if self._fast else Pi0
        skeleton = eqx.filter_eval_shape(module_type, self.config, key=jax.random.key(0), lora=adapters(train_config))
        labels = weights.label(skeleton, sorted(params))
        spec = jax.tree.map(lambda name: is_trainable(name, train_config), labels)
        self._trainable_labels, frozen_labels = eqx.partition(labels, spec)
        self.trainable_names: list[str] = jax.tree.leaves(self._trainable_labels)
        """Canonical names of the trained parameters, in the leaf order of every state tree."""
        self.frozen_names: list[str] = jax.tree.leaves(frozen_labels)
        self.adapted = {name[: -len(".lora_a")]: name for name in adapter_schema if name.endswith(".lora_a")}
        self._scales = {prefix: lora.scale for prefix, lora in adapters(train_config).items()}

        self.mesh = make_mesh(train_config.fsdp_devices, devices)
        fsdp = self.mesh.shape[FSDP_AXIS]
        shapes = {name: tuple(np.shape(value)) for name, value in params.items()}

        def sharding(name: str) -> NamedSharding:
            return NamedSharding(self.mesh, fsdp_spec(shapes[name], 4, fsdp, fsdp_min_bytes))

        self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXES))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        param_shardings = jax.tree.map(sharding, self._trainable_labels)
        params_shape = self._tree({name: jax.ShapeDtypeStruct(shapes[name], jnp.float32) for name in shapes})
        self._opt_shape = jax.eval_shape(optimizer(train_config.optimizer).init, params_shape)
        self._shardings = TrainState(
            params=param_shardings,
            opt_state=self._with_adam(self._replicated, param_shardings, param_shardings, self._replicated),
            ema=None if train_config.ema_decay is None else param_shardings,
        )
        frozen_values = jax.tree.map(lambda name: np.asarray(params[name], np.float32), frozen_labels)
        self._frozen = jax.device_put(frozen_values, jax.tree.map(sharding, frozen_labels))
        self._model = (Pi0FASTModel if self._fast else Pi0Model)(self.config, skeleton)
        """Checks and converts observations (its module is only a shape skeleton)."""
        trained = {name: params[name] for name in self.trainable_names}
        zeros = {name: np.zeros(shapes[name], np.float32) for name in self.trainable_names}
        self._state = self._place(trained, zeros, zeros, np.int32(0), trained)

    # -- trees <-> name dicts ---------------------------------------------------------

    def _tree(self, values: Mapping[str, object]) -> Pi0 | Pi0FAST:
        """Trainable-parameter tree holding ``values[name]`` at each name's leaf."""
        return jax.tree.map(lambda name: values[name], self._trainable_labels)

    def _with_adam(self, count, mu, nu, other) -> optax.OptState:
        """An optimizer-state tree: ``count``, ``mu``, ``nu`` in the Adam state and
        ``other`` at any other leaf (the clipping and decay states hold none)."""
        leaf = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
        states = list(jax.tree.map(lambda _: other, self._opt_shape, is_leaf=leaf))
        states[_ADAM] = states[_ADAM]._replace(count=count, mu=mu, nu=nu)
        return tuple(states)

    def _dict(self, tree: Pi0 | Pi0FAST) -> dict[str, np.ndarray]:
        return {name: _fetch(leaf) for name, leaf in zip(self.trainable_names, jax.tree.leaves(tree), strict=True)}

    def _frozen_dict(self) -> dict[str, np.ndarray]:
        leaves = jax.tree.leaves(self._frozen)
        return {name: _fetch(leaf) for name, leaf in zip(self.frozen_names, leaves, strict=True)}

    def _place(self, params, mu, nu, count, ema) -> TrainState:
        """A :class:`TrainState` on the mesh from name -> numpy dicts (``ema`` unused without EMA)."""
        state = TrainState(
            params=self._tree({name: np.asarray(params[name], np.float32) for name in self.trainable_names}),
            opt_state=self._with_adam(np.asarray(count, np.int32), self._tree(mu), self._tree(nu), None),
            ema=None if self.train_config.ema_decay is None else self._tree(ema),
        )
        return jax.device_put(state, self._shardings)

    # -- AbstractTrainer --------------------------------------------------------------

    def _batched(self, value: np.ndarray) -> Array:
        return jax.make_array_from_process_local_data(self._batch_sharding, np.asarray(value))

    def step(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray, lr: float
    ) -> dict[str, float]:
        """One update on this process's share of the batch: ``observation`` (``B``
        examples), ``actions`` and ``noise`` float32 ``[B, H, A]``, ``time`` float32
        ``[B]``; ``B`` must be divisible by the number of local devices. π0-FAST reads
        its targets from the observation's token sequence (``token_loss_mask`` marks
        them) and ignores ``actions``, ``noise`` and ``time``.

        Raises:
            InputError: a shape differs from the config's, π0-FAST's token masks are
                missing, or ``B`` does not split evenly over the devices.
        """
        size = observation.batch_size
        local = len(self.mesh.local_devices)
        if size % local:
            raise InputError(f"batch size {size} should be divisible by the {local} local devices of the mesh")
        if self._fast:
            inputs = self._model.inputs(observation, training=True)
            batch = jax.tree.map(lambda x: self._batched(np.asarray(x)), inputs)
        else:
            chunk = (size, self.config.action_horizon, self.config.action_dim)
            for name, value, shape in (("actions", actions, chunk), ("noise", noise, chunk), ("time", time, (size,))):
                if np.shape(value) != shape:
                    raise InputError(f"{name} should have shape {list(shape)}, got {list(np.shape(value))}")
            inputs = jax.tree.map(lambda x: self._batched(np.asarray(x)), self._model.inputs(observation))
            batch = (inputs, *(self._batched(np.asarray(x, np.float32)) for x in (actions, noise, time)))
        self._state, info = train_step(
            self._frozen,
            self._state,
            batch,
            jax.device_put(np.float32(lr), self._replicated),
            pi0_fast_loss if self._fast else pi0_loss,
            self.train_config.optimizer,
            self.train_config.ema_decay,
            self._shardings,
        )
        return {key: float(value) for key, value in info.items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``params/<name>`` for every parameter (frozen ones included), ``opt/mu/<name>``,
        ``opt/nu/<name>`` and ``ema/<name>`` for the trained ones, ``opt/count`` (int32
        ``[]``): float32 numpy copies."""
        adam = self._state.opt_state[_ADAM]
        out = {f"params/{name}": value for name, value in self._dict(self._state.params).items()}
        out.update({f"params/{name}": value for name, value in self._frozen_dict().items()})
        out.update({f"opt/mu/{name}": value for name, value in self._dict(adam.mu).items()})
        out.update({f"opt/nu/{name}": value for name, value in self._dict(adam.nu).items()})
        out["opt/count"] = _fetch(adam.count)
        if self._state.ema is not None:
            out.update({f"ema/{name}": value for name, value in self._dict(self._state.ema).items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`'s output; frozen parameters are restored too.

        Raises:
            WeightsError: a key is missing or unexpected, or an array's shape differs.
        """
        expected = self.state_dict_shapes()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise WeightsError(f"trainer state: missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
        for key, shape in expected.items():
            if tuple(np.shape(state[key])) != shape:
                raise WeightsError(
                    f"trainer state {key!r} should have shape {list(shape)}, got {list(np.shape(state[key]))}"
                )

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {name: np.asarray(state[f"{prefix}/{name}"], np.float32) for name in self.trainable_names}

        ema = part("ema") if self.train_config.ema_decay is not None else None
        self._state = self._place(part("params"), part("opt/mu"), part("opt/nu"), state["opt/count"], ema)
        frozen = {name: np.asarray(state[f"params/{name}"], np.float32) for name in self.frozen_names}
        frozen_tree = jax.tree.unflatten(jax.tree.structure(self._frozen), [frozen[n] for n in self.frozen_names])
        self._frozen = jax.device_put(frozen_tree, jax.tree.map(lambda x: x.sharding, self._frozen))

    def state_dict_shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape of everything :meth:`state_dict` returns."""
        shapes = {name: tuple(leaf.shape) for name, leaf in self._named_leaves()}
        out = {f"params/{name}": shape for name, shape in shapes.items()}
        for slot in ("opt/mu", "opt/nu") + (("ema",) if self.train_config.ema_decay is not None else ()):
            out.update({f"{slot}/{name}": shapes[name] for name in self.trainable_names})
        out["opt/count"] = ()
        return out

    def _named_leaves(self) -> list[tuple[str, Array]]:
        trained = zip(self.trainable_names, jax.tree.leaves(self._state.params), strict=True)
        frozen = zip(self.frozen_names, jax.tree.leaves(self._frozen), strict=True)
        return [*trained, *frozen]

    def inference_params(self) -> dict[str, np.ndarray]:
        """Canonical float32 weights to serve: the EMA of the trained parameters (the
        parameters themselves without EMA) with the frozen ones, each adapted weight
        merged with its adapters as ``W + scale * (lora_a @ lora_b)``."""
        source = self._state.params if self._state.ema is None else self._state.ema
        params = {**self._dict(source), **self._frozen_dict()}
        for weight, lora_a in self.adapted.items():
            lora_b = weight + ".lora_b"
            scale = self._scales[weight.split(".", 1)[0]]
            params[weight] = np.asarray(merge_lora(params[weight], params.pop(lora_a), params.pop(lora_b), scale))
        return params
