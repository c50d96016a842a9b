"""The JAX trainer's contract (:class:`openpi_core.training.api.AbstractTrainer`):
it learns, its step is optax's AdamW, LoRA freezes what it should, EMA, bit-exact
resume, data parallel and FSDP, and one compilation.

Every π0 test shares one train config, so the train step compiles once per family
(about 15 s on two CPU cores) and the other tests reuse it.
"""

import json
import os
import subprocess
import sys
import textwrap

import attrs
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from openpi_backend_jax import training
from openpi_backend_jax.backend import JaxBackend
from openpi_backend_jax.pi0 import Pi0Model
from openpi_backend_jax.training import JaxTrainer, TrainState, make_mesh, optimizer, train_step
from openpi_conformance.fixtures import seeded_observation, seeded_params, tiny_pi0_config
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.training.config import AdamWConfig, LoRAConfig, TrainConfig
from openpi_core.training.lora import init_lora, is_trainable

BATCH = 4
TRAIN = TrainConfig(
    exp_name="test",
    batch_size=BATCH,
    precision="float32",
    ema_decay=0.9,
    optimizer=AdamWConfig(weight_decay=1e-2),
)
"""Weight decay large enough to show in the parameters; default clipping (1.0), which
the first steps of the tiny models trigger."""
LORA = attrs.evolve(TRAIN, llm_lora=LoRAConfig(rank=2, alpha=4.0), expert_lora=LoRAConfig(rank=4, alpha=4.0))


def fixed_batch(config):
    """A small fixed batch whose actions are a smooth function of the state."""
    observation = seeded_observation(config, BATCH)
    ramp = np.linspace(0.5, 1.5, config.action_horizon, dtype=np.float32)
    actions = np.tanh(observation.state[:, None, :] * ramp[None, :, None])
    return observation, actions.astype(np.float32)


def run(trainer, config, steps, first=0, lr=1e-3):
    """``steps`` steps with the loop's noise and times of steps ``first, first + 1, …``;
    returns each step's info."""
    observation, actions = fixed_batch(config)
    infos = []
    for i in range(first, first + steps):
        noise, time = draw_noise(i, actions.shape), draw_time(i, BATCH)
        infos.append(trainer.step(observation, actions, noise, time, lr(i) if callable(lr) else lr))
    return infos


def assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_loss_falls_on_a_fixed_batch(family):
    config = tiny_pi0_config(family)
    trainer = JaxTrainer(config, TRAIN, seeded_params(config))
    losses = [info["loss"] for info in run(trainer, config, 200, lr=lambda i: 3e-3 * min(1.0, (i + 1) / 20))]
    assert np.all(np.isfinite(losses))
    drop = np.mean(losses[:5]) / np.mean(losses[-25:])
    assert drop >= 5, f"loss fell only {drop:.1f}x: {losses[:5]} ... {losses[-25:]}"


class Toy(eqx.Module):
    w: jax.Array
    b: jax.Array
    c: jax.Array


def toy_loss(model: Toy, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = batch
    return jnp.mean(jnp.square((x @ model.w + model.b) * (1.0 + model.c) - y))


def test_step_is_optax_adamw_with_clipping():
    """Three steps of :func:`train_step` on a toy with one frozen array equal optax's own
    ``clip_by_global_norm`` + ``adamw`` with the same learning rates."""
    rng = np.random.default_rng(0)
    toy = Toy(*(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((3, 4), (4,), (4,))))
    batch = (jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), jnp.asarray(rng.normal(size=(8, 4)), jnp.float32))
    adamw = AdamWConfig(b1=0.8, b2=0.9, eps=1e-6, weight_decay=0.1, clip_gradient_norm=0.5)
    spec = Toy(w=True, b=True, c=False)
    params, frozen = eqx.partition(toy, spec)
    lrs = [1e-2, 3e-2, 5e-3]
    decay = 0.75

    replicated = NamedSharding(make_mesh(1, jax.devices()[:1]), PartitionSpec())
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # noqa: E731  (the step donates its state)
    state = TrainState(copy(params), optimizer(adamw).init(params), copy(params))
    shardings = jax.tree.map(lambda _: replicated, state)
    ema = params
    for lr in lrs:
        state, info = train_step(frozen, state, batch, jnp.float32(lr), toy_loss, adamw, decay, shardings)
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, state.params)

    reference = optax.chain(
        optax.clip_by_global_norm(adamw.clip_gradient_norm),
        optax.adamw(
            lambda count: jnp.asarray(lrs)[count], adamw.b1, adamw.b2, adamw.eps, weight_decay=adamw.weight_decay
        ),
    )
    expected, opt_state = params, reference.init(params)
    for _ in lrs:
        loss, grads = jax.value_and_grad(lambda p: toy_loss(eqx.combine(p, frozen), batch))(expected)
        assert optax.tree.norm(grads) > adamw.clip_gradient_norm  # clipping is exercised
        updates, opt_state = reference.update(grads, opt_state, expected)
        expected = optax.apply_updates(expected, updates)

    for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(info["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(info["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    assert state.params.c is None and state.opt_state[1].mu.c is None  # frozen: no optimizer state
    for got, want in zip(jax.tree.leaves(state.ema), jax.tree.leaves(ema), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_lora_trains_adapters_and_freezes_their_experts():
    config = tiny_pi0_config("pi0")
    params = seeded_params(config)
    trainer = JaxTrainer(config, LORA, params)
    schema = pi0_weight_schema(config)
    adapters = init_lora(schema, LORA, LORA.seed)
    before = trainer.state_dict()
    for name, value in adapters.items():  # drawn from the seed when not given
        np.testing.assert_array_equal(before[f"params/{name}"], value, err_msg=name)
    run(trainer, config, 3)
    after = trainer.state_dict()

    trained = {name for name in (*schema, *adapters) if is_trainable(name, LORA)}
    assert {key[len("opt/mu/") :] for key in after if key.startswith("opt/mu/")} == trained
    assert {key[len("opt/nu/") :] for key in after if key.startswith("opt/nu/")} == trained
    assert {key[len("ema/") :] for key in after if key.startswith("ema/")} == trained
    for name in (*schema, *adapters):
        old, new = before[f"params/{name}"], after[f"params/{name}"]
        if name in trained:
            assert not np.array_equal(old, new), f"{name} did not train"
        else:
            assert name.startswith(("llm.", "expert.")) and not name.endswith(("lora_a", "lora_b"))
            np.testing.assert_array_equal(old, new, err_msg=name)
    assert any(name.startswith("vision.") for name in trained)

    served = trainer.inference_params()
    assert set(served) == set(schema)
    weight, scale = "expert.layers.mlp.down", 1.0
    lora_a, lora_b = after[f"ema/{weight}.lora_a"], after[f"ema/{weight}.lora_b"]
    merged = after[f"params/{weight}"] + scale * np.einsum("dmr,drw->dmw", lora_a, lora_b)
    np.testing.assert_allclose(served[weight], merged, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(served["vision.head.kernel"], after["ema/vision.head.kernel"])
    Pi0Model.from_params(config, served)


def test_ema_is_the_closed_form_of_the_trajectory():
    config = tiny_pi0_config("pi0")
    trainer = JaxTrainer(config, TRAIN, seeded_params(config))
    names = [key[len("ema/") :] for key in trainer.state_dict() if key.startswith("ema/")]
    trajectory = [trainer.state_dict()]
    for i in range(4):
        run(trainer, config, 1, first=i)
        trajectory.append(trainer.state_dict())
    d, k = TRAIN.ema_decay, len(trajectory) - 1
    served = trainer.inference_params()
    for name in names:
        points = [np.float64(state[f"params/{name}"]) for state in trajectory]
        expected = d**k * points[0] + sum((1 - d) * d ** (k - i) * points[i] for i in range(1, k + 1))
        np.testing.assert_allclose(trajectory[-1][f"ema/{name}"], expected, rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(served[name], trajectory[-1][f"ema/{name}"])
    assert not np.array_equal(served["action_out_proj.kernel"], trajectory[-1]["params/action_out_proj.kernel"])


def test_resume_continues_bit_for_bit():
    config = tiny_pi0_config("pi0")
    uninterrupted = JaxTrainer(config, TRAIN, seeded_params(config))
    run(uninterrupted, config, 2)
    saved = uninterrupted.state_dict()
    assert saved["opt/count"].dtype == np.int32 and saved["opt/count"] == 2

    resumed = JaxTrainer(config, TRAIN, seeded_params(config, seed=5))
    resumed.load_state_dict(saved)
    assert_same(resumed.state_dict(), saved)
    infos = run(uninterrupted, config, 2, first=2), run(resumed, config, 2, first=2)
    assert infos[0] == infos[1]
    assert_same(resumed.state_dict(), uninterrupted.state_dict())

    with pytest.raises(WeightsError, match="opt/count"):
        resumed.load_state_dict({k: v for k, v in saved.items() if k != "opt/count"})
    with pytest.raises(WeightsError, match=r"ema/vision\.head\.bias"):
        resumed.load_state_dict({**saved, "ema/vision.head.bias": np.zeros(3, np.float32)})


def test_train_step_compiles_once():
    config = tiny_pi0_config("pi0")
    trainer = JaxTrainer(config, TRAIN, seeded_params(config))
    before = eqx.debug.get_num_traces(train_step)
    run(trainer, config, 1)
    first = eqx.debug.get_num_traces(train_step)
    assert first - before <= 1  # zero when another test compiled this config already
    run(trainer, config, 3, first=1, lr=lambda i: 1e-4 * i)
    run(JaxTrainer(config, TRAIN, seeded_params(config, seed=3)), config, 2)
    assert eqx.debug.get_num_traces(train_step) == first


def test_bfloat16_keeps_float32_master_weights():
    config = tiny_pi0_config("pi0")
    params = seeded_params(config)
    mixed = JaxTrainer(config, attrs.evolve(TRAIN, precision="bfloat16"), params)
    full = JaxTrainer(config, TRAIN, params)
    (mixed_info,), (full_info,) = run(mixed, config, 1), run(full, config, 1)
    np.testing.assert_allclose(mixed_info["loss"], full_info["loss"], rtol=0.05)
    state = mixed.state_dict()
    assert all(value.dtype == np.float32 for key, value in state.items() if key != "opt/count")
    moved = state["params/vision.head.kernel"] - params["vision.head.kernel"]
    assert 0 < np.abs(moved).max() < 2e-3  # one step of at most lr (plus decay)


def test_errors_name_the_problem():
    config = tiny_pi0_config("pi0")
    params = seeded_params(config)
    with pytest.raises(InputError, match="precision"):
        JaxTrainer(config, attrs.evolve(TRAIN, precision="float16"), params)
    with pytest.raises(InputError, match="fsdp_devices"):
        JaxTrainer(config, attrs.evolve(TRAIN, fsdp_devices=3), params)
    with pytest.raises(WeightsError, match=r"action_in_proj\.bias"):
        JaxTrainer(config, TRAIN, {k: v for k, v in params.items() if k != "action_in_proj.bias"})
    trainer = JaxTrainer(config, TRAIN, params)
    observation, actions = fixed_batch(config)
    with pytest.raises(InputError, match="time"):
        trainer.step(observation, actions, actions, np.zeros(3, np.float32), 1e-3)
    with pytest.raises(InputError, match="noise"):
        trainer.step(observation, actions, actions[:, :2], np.zeros(BATCH, np.float32), 1e-3)


def test_backend_creates_the_trainer():
    config = tiny_pi0_config("pi05")
    trainer = JaxBackend().create_trainer(config, TRAIN, seeded_params(config))
    assert isinstance(trainer, JaxTrainer)
    assert trainer.config.dtype == "float32" and trainer.mesh.shape == {"batch": 1, "fsdp": 1}


PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import attrs, jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_training import TRAIN, run
    from openpi_backend_jax.training import JaxTrainer
    from openpi_conformance.fixtures import seeded_params, tiny_pi0_config

    assert jax.device_count() == 2, jax.devices()
    config = tiny_pi0_config("pi05")
    params = seeded_params(config)
    results, shardings = {}, {}
    for name, devices, fsdp in (("single", jax.devices()[:1], 1), ("data", None, 1), ("fsdp", None, 2)):
        trainer = JaxTrainer(config, attrs.evolve(TRAIN, fsdp_devices=fsdp), params, devices=devices, fsdp_min_bytes=0)
        infos = run(trainer, config, 2)
        results[name] = (infos, trainer.state_dict())
        kernel = trainer._state.params.expert.layers.mlp.gate_up
        shardings[name] = [str(kernel.sharding.spec), len(kernel.addressable_shards[0].data.flatten())]
    infos, single = results["single"]
    report = {"shardings": shardings}
    for name in ("data", "fsdp"):
        other_infos, other = results[name]
        report[name] = {
            "loss": [abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(infos, other_infos)],
            "grad_norm": [abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] for a, b in zip(infos, other_infos)],
            "state": max(float(np.max(np.abs(single[k] - other[k]))) for k in single if k != "opt/count"),
        }
    print(json.dumps(report))
    """
)


def test_data_parallel_and_fsdp_match_one_device():
    """Two host devices (a fresh process: the device count is fixed when jax starts):
    the batch split over both, then FSDP with every parameter split, against one device."""
    env = {
        **os.environ,
        # Level 0 halves XLA's CPU compile time; all three runs share it.
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0",
        "JAX_PLATFORMS": "cpu",
    }
    here = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", PARALLEL_SCRIPT, here], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "fsdp" not in report["shardings"]["data"][0]
    assert report["shardings"]["data"][1] == report["shardings"]["single"][1]
    fsdp_spec, fsdp_size = report["shardings"]["fsdp"]
    assert "fsdp" in fsdp_spec and fsdp_size * 2 == report["shardings"]["single"][1]
    for name in ("data", "fsdp"):
        assert max(report[name]["loss"] + report[name]["grad_norm"]) < 1e-5, report
        # Adam divides by the gradient's magnitude, so a gradient that is zero up to
        # rounding (SigLIP's key bias does not change the softmax) moves by rounding-
        # dependent fractions of lr (1e-3): measured 1.5e-5 (data) and 2.5e-5 (FSDP).
        assert report[name]["state"] < 1e-4, report


def test_fsdp_spec_splits_the_largest_divisible_axis():
    assert training.fsdp_spec((6, 64, 16), 4, 2, 0) == PartitionSpec(None, "fsdp", None)
    assert training.fsdp_spec((6, 63, 16), 4, 2, 0) == PartitionSpec(None, None, "fsdp")
    assert training.fsdp_spec((6, 63, 15), 4, 2, 0) == PartitionSpec("fsdp", None, None)
    assert training.fsdp_spec((64,), 4, 2, 0) == PartitionSpec()
    assert training.fsdp_spec((64, 64), 4, 2, 2**20) == PartitionSpec()
    assert training.fsdp_spec((64, 64), 4, 1, 0) == PartitionSpec()
