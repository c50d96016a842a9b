"""Training π0, π0.5 and π0-FAST in PyTorch: the :class:`~openpi_core.training.api.AbstractTrainer`.

One step is openpi's: the mean loss of the family (flow matching for π0/π0.5, the
next-token cross-entropy on the FAST token sequence for π0-FAST), its gradient with respect to the
trainable parameters, ``optax.clip_by_global_norm`` then ``optax.adamw`` (no weight
decay mask: every trainable parameter decays), then the EMA. The optimizer is written
out element-wise (:func:`adamw_update`) with every scalar a float32 on the
parameters' device and no fused multiply-adds, in optax's order of operations, so
the JAX trainer and this one take the same step:

    g      ← g                         if ‖g‖ < c  else  (g / ‖g‖) · c
    μ      ← (1 − β1) · g + β1 · μ
    ν      ← (1 − β2) · g² + β2 · ν
    u      ← (μ / (1 − β1ⁿ)) / (√(ν / (1 − β2ⁿ)) + ε)          n = updates done, this one included
    θ      ← θ + (−lr) · (u + λ · θ)
    ema    ← d · ema + (1 − d) · θ

``torch.optim.AdamW`` is not used: it decays ``θ ← θ · (1 − lr·λ)`` before the Adam
step and folds the bias corrections into the step size and ``ε``, which is the same
formula but not the same float32 numbers.

Parameters live in the module's layout (fused q/k/v, ``[out, in]`` dense weights) as
float32 master weights; the optimizer is element-wise, so the layout does not change
the step. :meth:`TorchTrainer.state_dict` converts to canonical names and layouts.

Precision: ``float32`` runs in IEEE float32; ``bfloat16`` runs the forward and backward
passes under ``torch.autocast(bfloat16)`` (matmuls and attention in bfloat16, norms
and element-wise maths in float32), the masters and the optimizer in float32.

Frozen parameters (:func:`~openpi_core.training.lora.is_trainable`) have
``requires_grad`` False, no optimizer state and no EMA copy (their EMA would be
themselves); they stay float32 (openpi casts them to bfloat16).

Data parallelism (see :mod:`openpi_backend_torch.distributed`): with more than one
rank, the module is wrapped in ``DistributedDataParallel`` (``static_graph``: the LLM's
final norm never gets a gradient), or, with ``fsdp_devices`` > 1, sharded with FSDP2's
``fully_shard`` per transformer layer on a ``(replicate, shard)`` mesh. Each rank
computes the loss on its rows of the global batch; gradients are averaged.
"""

from collections.abc import Iterable, Mapping, Sequence

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from openpi_backend_torch import distributed, weights
from openpi_backend_torch.inputs import ModelInputs, action_chunk, flow_time, observation_inputs
from openpi_backend_torch.lora import adapter_rules, apply_lora, merge_lora
from openpi_backend_torch.pi0 import Pi0Module
from openpi_backend_torch.pi0_fast import Pi0FASTModule, fast_inputs
from openpi_backend_torch.precision import exact_float32
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.api import check_params
from openpi_core.models.config import Pi0Config, Pi0FASTConfig
from openpi_core.models.pi0_weights import check_against_schema
from openpi_core.observation import Observation
from openpi_core.training.api import AbstractTrainer
from openpi_core.training.config import AdamWConfig, TrainConfig
from openpi_core.training.lora import is_trainable, lora_schema

PRECISIONS = ("float32", "bfloat16")
SLOTS = ("mu", "nu")
"""Optimizer state slots, named as optax's ``ScaleByAdamState`` names them."""


def _f32(value: float, device: torch.device) -> Tensor:
    """A float32 scalar on ``device``: a Python float would be a CPU scalar, which CUDA
    kernels turn a division by into a multiplication by the reciprocal."""
    return torch.tensor(value, dtype=torch.float32, device=device)


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (FSDP2), the tensor itself otherwise."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def global_norm(tensors: Sequence[Tensor], group: dist.ProcessGroup | None = None) -> Tensor:
    """``sqrt(Σ_i Σ tensors_i²)`` float32 scalar (optax's ``tree.norm``). With ``group``,
    the tensors are shards and their squared sums are added across it."""
    squares = torch.stack([t.float().square().sum() for t in tensors]).sum()
    if group is not None:
        dist.all_reduce(squares, group=group)
    return torch.sqrt(squares)


def bias_correction(decay: float, count: int) -> float:
    """``1 - decay**count`` rounded as optax computes it in float32 (the power of the
    float32 ``decay`` correctly rounded, as XLA computes it)."""
    power = np.float32(np.float64(np.float32(decay)) ** count)
    return float(np.float32(1.0) - power)


@torch.no_grad()
def adamw_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    mu: Sequence[Tensor],
    nu: Sequence[Tensor],
    count: int,
    lr: float,
    config: AdamWConfig,
    grad_norm: Tensor,
) -> None:
    """One ``clip_by_global_norm`` + ``adamw`` update of float32 ``params``, in place.

    Args:
        params, grads, mu, nu: matching float32 tensors (any shapes).
        count: updates done before this one (optax's ``count``).
        lr: this update's learning rate.
        grad_norm: the global norm of ``grads`` (float32 scalar on their device).
    """
    if not params:
        return
    device = params[0].device
    b1, b2 = _f32(config.b1, device), _f32(config.b2, device)
    one_minus_b1, one_minus_b2 = _f32(1 - config.b1, device), _f32(1 - config.b2, device)
    correction1 = _f32(bias_correction(config.b1, count + 1), device)
    correction2 = _f32(bias_correction(config.b2, count + 1), device)
    eps, decay = _f32(config.eps, device), _f32(config.weight_decay, device)
    step_size = _f32(-lr, device)
    max_norm = _f32(config.clip_gradient_norm, device)
    clip = not bool(grad_norm < max_norm)
    for p, g, m, v in zip(params, grads, mu, nu, strict=True):
        if clip:
            g = (g / grad_norm) * max_norm
        m.copy_(one_minus_b1 * g + b1 * m)
        v.copy_(one_minus_b2 * (g * g) + b2 * v)
        update = (m / correction1) / (torch.sqrt(v / correction2) + eps)
        p.copy_(p + step_size * (update + decay * p))


@torch.no_grad()
def ema_update(ema: Sequence[Tensor], params: Sequence[Tensor], decay: float) -> None:
    """``ema ← decay · ema + (1 − decay) · params``, in place, float32."""
    if not ema:
        return
    device = ema[0].device
    d, one_minus_d = _f32(decay, device), _f32(1 - decay, device)
    for e, p in zip(ema, params, strict=True):
        e.copy_(d * e + one_minus_d * p)


class _Loss(nn.Module):
    """The module a data-parallel wrapper drives: ``forward(*batch)`` is the model's
    loss (``[B, H]`` for π0/π0.5 given ``(inputs, actions, noise, time)``, ``[B]`` for
    π0-FAST given its :class:`~openpi_backend_torch.pi0_fast.FASTInputs`)."""

    def __init__(self, model: Pi0Module | Pi0FASTModule) -> None:
        super().__init__()
        self.model = model

    def forward(self, *batch: ModelInputs | Tensor) -> Tensor:
        return self.model.loss(*batch)


def _observation_rows(observation: Observation, rows: slice) -> Observation:
    def take(value):
        if value is None:
            return None
        return {key: array[rows] for key, array in value.items()} if isinstance(value, dict) else value[rows]

    return Observation(**{f.name: take(getattr(observation, f.name)) for f in attrs.fields(Observation)})


class TorchTrainer(AbstractTrainer):
    """A π0, π0.5 or π0-FAST model, its AdamW state and its EMA weights, on one or more ranks.

    Attributes:
        config: the model config, float32 (the master weights' dtype).
        train_config: the run's :class:`~openpi_core.training.config.TrainConfig`.
        world: this process's rank, the world size and the device.
        module: the :class:`~openpi_backend_torch.pi0.Pi0Module` (or
            :class:`~openpi_backend_torch.pi0_fast.Pi0FASTModule`) being trained.
    """

    def __init__(
        self,
        model_config: Pi0Config | Pi0FASTConfig,
        train_config: TrainConfig,
        params: Mapping[str, np.ndarray],
        *,
        device: str | torch.device | None = None,
    ) -> None:
        """Start from canonical ``params``, which hold the adapters exactly when
        ``train_config`` asks for LoRA (:func:`~openpi_core.training.lora.init_lora`).

        Raises:
            InputError: an unknown precision, or ``fsdp_devices`` does not divide the world size.
            WeightsError: ``params`` miss, add or mis-shape a parameter, or hold NaN/inf.
        """
        if train_config.precision not in PRECISIONS:
            raise InputError(f"precision should be one of {list(PRECISIONS)}, got {train_config.precision!r}")
        self.config = attrs.evolve(model_config, dtype="float32")
        self.train_config = train_config
        self.world = distributed.world(device)
        self._fast = isinstance(model_config, Pi0FASTConfig)
        schema = weights.weight_schema(self.config)
        check_params(params)
        check_against_schema(params, {**schema, **lora_schema(schema, train_config)})

        with torch.device("meta"):
            module = Pi0FASTModule(self.config) if self._fast else Pi0Module(self.config)
        weights.load_into(module, self.config, {name: params[name] for name in schema})
        module = module.to(self.world.device)
        apply_lora(module, self.config, train_config)
        self.rules = weights.module_rules(self.config) + adapter_rules(train_config, self.config.llm.depth)
        adapters = {name: p for name, p in module.named_parameters() if ".adapters." in name}
        self._copy_into(adapters, self._to_module(params, adapters))
        module.gemma.gradient_checkpointing = train_config.gradient_checkpointing
        module.vision.gradient_checkpointing = train_config.gradient_checkpointing
        self.module = module

        canonical_of = {}
        for rule in self.rules:
            for name in self._module_names(rule):
                canonical_of[name] = rule.canonical[0]
        for name, param in module.named_parameters():
            param.requires_grad_(is_trainable(canonical_of[name], train_config))
        self._step_module, self._shard_group = self._parallelize(_Loss(module))
        # After _parallelize: fully_shard replaces the parameters by sharded ones.
        self._trainable = {name: p for name, p in module.named_parameters() if p.requires_grad}

        self._mu = {name: torch.zeros_like(p) for name, p in self._trainable.items()}
        self._nu = {name: torch.zeros_like(p) for name, p in self._trainable.items()}
        self._count = 0
        ema_on = train_config.ema_decay is not None
        self._ema = {name: p.detach().clone() for name, p in self._trainable.items()} if ema_on else {}

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and logs (rank 0)."""
        return self.world.is_main

    def _parallelize(self, loss: _Loss) -> tuple[nn.Module, dist.ProcessGroup | None]:
        """Wrap for data parallelism; returns the module to call and, under FSDP, the
        group across which parameters are sharded."""
        fsdp = self.train_config.fsdp_devices
        if self.world.size % fsdp:
            raise InputError(f"fsdp_devices {fsdp} should divide the world size {self.world.size}")
        if fsdp > 1:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(
                self.world.device.type, (self.world.size // fsdp, fsdp), mesh_dim_names=("replicate", "shard")
            )
            for layer in [*loss.model.vision.layers, *loss.model.gemma.layers]:
                fully_shard(layer, mesh=mesh)
            fully_shard(loss, mesh=mesh)
            return loss, mesh["shard"].get_group()
        if self.world.size > 1:
            device_ids = [self.world.device] if self.world.device.type == "cuda" else None
            return nn.parallel.DistributedDataParallel(loss, device_ids=device_ids, static_graph=True), None
        return loss, None

    def _module_names(self, rule: weights.Rule) -> list[str]:
        return [rule.module.format(i=i) for i in range(rule.depth)] if rule.depth else [rule.module]

    def _to_canonical(self, tensors: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """Module name -> tensor (full, not sharded) ==> canonical name -> float32 array,
        for the rules whose module tensors are all present."""

        def array(name: str) -> np.ndarray:
            return tensors[name].detach().to(device="cpu", dtype=torch.float32).numpy()

        out = {}
        for rule in self.rules:
            names = self._module_names(rule)
            if not all(name in tensors for name in names):
                continue
            if rule.depth:
                parts = [np.stack(ps) for ps in zip(*(rule.to_canonical(array(n)) for n in names), strict=True)]
            else:
                parts = list(rule.to_canonical(array(names[0])))
            for name, part in zip(rule.canonical, parts, strict=True):
                out[name] = np.ascontiguousarray(part, dtype=np.float32)
        return out

    def _to_module(self, arrays: Mapping[str, np.ndarray], names: Iterable[str]) -> dict[str, np.ndarray]:
        """Canonical arrays ==> module name -> float32 array, for the module ``names``.

        Raises:
            WeightsError: a canonical array a wanted module tensor is made from is missing.
        """
        wanted = set(names)
        out = {}
        for rule in self.rules:
            module_names = self._module_names(rule)
            if not wanted.intersection(module_names):
                continue
            missing = [name for name in rule.canonical if name not in arrays]
            if missing:
                raise WeightsError(f"missing {missing} in the training state")
            sources = [np.asarray(arrays[name], dtype=np.float32) for name in rule.canonical]
            if rule.depth:
                for i, name in enumerate(module_names):
                    out[name] = rule.to_module(*(s[i] for s in sources))
            else:
                out[module_names[0]] = rule.to_module(*sources)
        return out

    @torch.no_grad()
    def _copy_into(self, targets: Mapping[str, Tensor], arrays: Mapping[str, np.ndarray]) -> None:
        """Copy full module-layout ``arrays`` into ``targets`` (plain or sharded tensors)."""
        for name, target in targets.items():
            value = torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)).to(self.world.device)
            if tuple(value.shape) != tuple(target.shape):
                raise WeightsError(f"{name!r} should have shape {list(target.shape)}, got {list(value.shape)}")
            if hasattr(target, "device_mesh"):
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value, target.device_mesh, target.placements)
            target.copy_(value)

    def _full(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: t.full_tensor() if hasattr(t, "full_tensor") else t for name, t in tensors.items()}

    def step(
        self, observation: Observation, actions: np.ndarray, noise: np.ndarray, time: np.ndarray, lr: float
    ) -> dict[str, float]:
        """One update on the global batch (``B`` rows; this rank computes its ``B / world``).

        Args:
            observation: the global batch.
            actions, noise: float32 ``[B, H, A]``.
            time: float32 ``[B]`` flow-matching times.
            lr: this update's learning rate.

        π0-FAST reads its targets from the observation's token sequence
        (``token_loss_mask`` marks them) and ignores ``actions``, ``noise`` and ``time``.

        Returns:
            ``loss``: the mean loss over the global batch before the update;
            ``grad_norm``: the global norm of the averaged gradient before clipping.
        """
        batch = observation.batch_size
        rows = self.world.rows(batch)
        device = self.world.device
        mine = _observation_rows(observation, rows)
        if self._fast:
            model_batch = (fast_inputs(self.config, mine, device),)
        else:
            local = rows.stop - rows.start
            model_batch = (
                observation_inputs(self.config, mine, device),
                action_chunk(self.config, "actions", np.asarray(actions)[rows], local, device),
                action_chunk(self.config, "noise", np.asarray(noise)[rows], local, device),
                flow_time(np.asarray(time)[rows], local, device),
            )
        bf16 = self.train_config.precision == "bfloat16"
        with exact_float32():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = self._step_module(*model_batch).float().mean()
            loss.backward()
        loss = loss.detach()
        if self.world.size > 1:
            dist.all_reduce(loss)
            loss = loss / self.world.size

        names = list(self._trainable)
        params = [_local(self._trainable[n].detach()) for n in names]
        grads = []
        for name, p in zip(names, params, strict=True):
            grad = self._trainable[name].grad
            # A parameter that cannot reach the loss (the LLM's final norm) has zero gradient.
            grads.append(torch.zeros_like(p) if grad is None else _local(grad))
        grad_norm = global_norm(grads, self._shard_group)
        with exact_float32():
            adamw_update(
                params,
                grads,
                [_local(self._mu[n]) for n in names],
                [_local(self._nu[n]) for n in names],
                self._count,
                lr,
                self.train_config.optimizer,
                grad_norm,
            )
            self._count += 1
            for p in self._trainable.values():
                p.grad = None
            if self._ema:
                ema_update([_local(self._ema[n]) for n in names], params, self.train_config.ema_decay)
        return {"loss": float(loss), "grad_norm": float(grad_norm)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``params/<name>`` (every parameter, adapters included), ``opt/mu/<name>`` and
        ``opt/nu/<name>`` (trainable ones), ``opt/count`` (int32 ``[]``, updates done) and,
        with EMA, ``ema/<name>`` (trainable ones); canonical names and layouts, float32.

        A collective under FSDP: every rank calls it."""
        state = {}
        params = self._full(dict(self.module.named_parameters()))
        for name, value in self._to_canonical(params).items():
            state[f"params/{name}"] = value
        for slot, tensors in (("mu", self._mu), ("nu", self._nu)):
            for name, value in self._to_canonical(self._full(tensors)).items():
                state[f"opt/{slot}/{name}"] = value
        for name, value in self._to_canonical(self._full(self._ema)).items():
            state[f"ema/{name}"] = value
        state["opt/count"] = np.asarray(self._count, dtype=np.int32)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (every rank passes the full state).

        Raises:
            WeightsError: a key is missing or unexpected, or an array is mis-shaped.
        """
        groups: dict[str, dict[str, np.ndarray]] = {"params": {}, "opt/mu": {}, "opt/nu": {}, "ema": {}}
        unexpected = []
        for key, value in state.items():
            group = next((g for g in groups if key.startswith(g + "/")), None)
            if group is None:
                if key != "opt/count":
                    unexpected.append(key)
                continue
            groups[group][key[len(group) + 1 :]] = value
        if "opt/count" not in state:
            raise WeightsError("the training state has no 'opt/count'")
        trainable_canonical = set(self._to_canonical_names(self._trainable))
        extra = {
            "opt/mu": set(groups["opt/mu"]) - trainable_canonical,
            "opt/nu": set(groups["opt/nu"]) - trainable_canonical,
            "ema": set(groups["ema"]) - trainable_canonical,
        }
        unexpected += [f"{group}/{name}" for group, names in extra.items() for name in sorted(names)]
        if self._ema == {} and groups["ema"]:
            unexpected.append("ema/… (EMA is off)")
        if unexpected:
            raise WeightsError(f"unexpected keys in the training state: {unexpected[:10]}")
        module_params = dict(self.module.named_parameters())
        self._copy_into(module_params, self._to_module(groups["params"], module_params))
        self._copy_into(self._mu, self._to_module(groups["opt/mu"], self._mu))
        self._copy_into(self._nu, self._to_module(groups["opt/nu"], self._nu))
        self._copy_into(self._ema, self._to_module(groups["ema"], self._ema))
        self._count = int(state["opt/count"])

    def _to_canonical_names(self, tensors: Mapping[str, Tensor]) -> list[str]:
        return [
            name
            for rule in self.rules
            if all(n in tensors for n in self._module_names(rule))
            for name in rule.canonical
        ]

    def inference_params(self) -> dict[str, np.ndarray]:
        """The canonical float32 weights to serve: EMA weights of the trainable
        parameters (when EMA is on), the frozen ones as they are, LoRA merged.

        A collective under FSDP: every rank calls it."""
        tensors = self._full({**dict(self.module.named_parameters()), **self._ema})
        return merge_lora(self._to_canonical(tensors), self.train_config)
