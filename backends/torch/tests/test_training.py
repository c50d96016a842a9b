"""The torch trainer: it learns, its AdamW is optax's, LoRA freezes what it should, EMA,
bit-exact resume, data parallelism under torchrun, gradient checkpointing."""

import os
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from openpi_backend_torch import TorchBackend
from openpi_backend_torch.lora import merge_lora
from openpi_backend_torch.pi0 import Pi0Model
from openpi_backend_torch.training import adamw_update, bias_correction, global_norm
from openpi_conformance.fixtures import seeded_actions, seeded_observation, seeded_params, tiny_pi0_config
from openpi_core.errors import InputError, WeightsError
from openpi_core.models.api import draw_noise, draw_time
from openpi_core.models.pi0_weights import pi0_weight_schema
from openpi_core.observation import Observation
from openpi_core.training.config import AdamWConfig, CosineDecaySchedule, LoRAConfig, TrainConfig
from openpi_core.training.lora import init_lora, is_trainable
from openpi_core.training.schedule import learning_rate

HERE = Path(__file__).parent


def _trainer(family="pi0", **train):
    config = tiny_pi0_config(family)
    train_config = TrainConfig(exp_name="test", **{"precision": "float32", **train})
    params = seeded_params(config)
    schema = pi0_weight_schema(config)
    params.update(init_lora(schema, train_config, seed=3))
    return TorchBackend().create_trainer(config, train_config, params), config, params


def _batch(config, step, batch=2):
    observation, actions = seeded_observation(config, batch), seeded_actions(config, batch)
    return observation, actions, draw_noise(step, actions.shape), draw_time(step, batch)


def _tile(observation: Observation, k: int) -> Observation:
    def tile(value):
        if value is None:
            return None
        if isinstance(value, dict):
            return {key: np.concatenate([a] * k) for key, a in value.items()}
        return np.concatenate([value] * k)

    return Observation(**{f.name: tile(getattr(observation, f.name)) for f in attrs.fields(Observation)})


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_loss_falls_fivefold_on_a_fixed_batch(family):
    """Actions are a fixed function of the state; π0.5 tells the examples apart by their
    images and prompts. The loss is measured on fixed draws of noise and time."""
    steps, batch = {"pi0": 250, "pi05": 400}[family], 4
    schedule = CosineDecaySchedule(warmup_steps=20, peak_lr=3e-3, decay_steps=steps, decay_lr=3e-4)
    trainer, config, params = _trainer(family, ema_decay=None, lr_schedule=schedule)
    observation = seeded_observation(config, batch)
    mixing = np.random.default_rng(0).normal(0, 0.5, (config.action_dim, config.action_horizon * config.action_dim))
    actions = np.tanh(observation.state @ mixing).reshape(batch, config.action_horizon, -1).astype(np.float32)

    draws = 8
    eval_obs, eval_actions = _tile(observation, draws), np.concatenate([actions] * draws)
    eval_noise, eval_time = draw_noise(99, eval_actions.shape), draw_time(99, batch * draws)
    before = Pi0Model.from_params(config, params).compute_loss(eval_obs, eval_actions, eval_noise, eval_time).mean()
    for step in range(steps):
        noise, time = draw_noise(step, actions.shape), draw_time(step, batch)
        trainer.step(observation, actions, noise, time, learning_rate(schedule, step))
    trained = Pi0Model.from_params(config, trainer.inference_params())
    after = trained.compute_loss(eval_obs, eval_actions, eval_noise, eval_time).mean()
    assert before / after >= 5.0, (before, after)


def _numpy_adamw(params, grads, mu, nu, count, lr, opt: AdamWConfig):
    """optax.chain(clip_by_global_norm, adamw) written out in float32 numpy."""
    f = np.float32
    norm = np.sqrt(sum(np.sum(np.square(g, dtype=f), dtype=f) for g in grads), dtype=f)
    if not norm < f(opt.clip_gradient_norm):
        grads = [(g / norm) * f(opt.clip_gradient_norm) for g in grads]
    out = []
    for p, g, m, v in zip(params, grads, mu, nu, strict=True):
        m[...] = f(1 - opt.b1) * g + f(opt.b1) * m
        v[...] = f(1 - opt.b2) * (g * g) + f(opt.b2) * v
        m_hat = m / (f(1) - f(opt.b1) ** f(count + 1))
        v_hat = v / (f(1) - f(opt.b2) ** f(count + 1))
        update = m_hat / (np.sqrt(v_hat + f(0)) + f(opt.eps)) + f(opt.weight_decay) * p
        out.append((p + f(-lr) * update).astype(f))
    return out, norm


def test_adamw_matches_a_numpy_reference_of_optax():
    opt = AdamWConfig(weight_decay=1e-2)
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (13,), (3, 4, 6)]
    params = [rng.normal(size=s).astype(np.float32) for s in shapes]
    mu = [np.zeros(s, np.float32) for s in shapes]
    nu = [np.zeros(s, np.float32) for s in shapes]
    tensors = [torch.tensor(p) for p in params]
    t_mu, t_nu = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    for count, scale in enumerate([3.0, 0.1, 2.0, 0.05]):  # clipped, not clipped, ...
        grads = [(rng.normal(size=s) * scale).astype(np.float32) for s in shapes]
        lr = 1e-3 * (count + 1)
        params, norm = _numpy_adamw(params, grads, mu, nu, count, lr, opt)
        t_grads = [torch.tensor(g) for g in grads]
        t_norm = global_norm(t_grads)
        np.testing.assert_allclose(float(t_norm), norm, rtol=1e-6)
        adamw_update(tensors, t_grads, t_mu, t_nu, count, lr, opt, t_norm)
        for got, want in zip(tensors, params, strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-7)
        for got, want in zip(t_mu + t_nu, mu + nu, strict=True):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)


def test_adamw_matches_optax():
    """Same formula and order as optax. XLA contracts multiply-adds into FMAs, so the
    last bit of an element may differ."""
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    opt = AdamWConfig(weight_decay=1e-2)
    rng = np.random.default_rng(1)
    shapes = [(5, 7), (13,)]
    params = [rng.normal(size=s).astype(np.float32) for s in shapes]
    tx = optax.chain(
        optax.clip_by_global_norm(opt.clip_gradient_norm),
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=0.0, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay
        ),
    )
    j_params = [jnp.asarray(p) for p in params]
    state = tx.init(j_params)
    tensors = [torch.tensor(p) for p in params]
    mu, nu = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    for count in range(6):
        grads = [(rng.normal(size=s) * (3.0 if count % 2 else 0.1)).astype(np.float32) for s in shapes]
        lr = 1e-3 * (count + 1)
        state[1].hyperparams["learning_rate"] = jnp.float32(lr)
        updates, state = tx.update([jnp.asarray(g) for g in grads], state, j_params)
        j_params = optax.apply_updates(j_params, updates)
        t_grads = [torch.tensor(g) for g in grads]
        adamw_update(tensors, t_grads, mu, nu, count, lr, opt, global_norm(t_grads))
        for got, want in zip(tensors, j_params, strict=True):
            np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=0, atol=1e-7)


def test_bias_correction_is_float32():
    assert bias_correction(0.9, 1) == np.float32(1) - np.float32(0.9)
    assert np.float32(bias_correction(0.95, 1000)) == np.float32(1) - np.float32(0.95) ** np.float32(1000)


def test_trainer_step_is_clip_plus_adamw_on_the_model_gradient():
    trainer, config, params = _trainer(ema_decay=None)
    observation, actions, noise, time = _batch(config, 0)
    loss, grads = Pi0Model.from_params(config, params).loss_gradients(observation, actions, noise, time)
    metrics = trainer.step(observation, actions, noise, time, lr=1e-3)
    names = sorted(params)
    mu, nu = ([np.zeros_like(params[n]) for n in names] for _ in range(2))
    current, gradient = [params[n] for n in names], [grads[n] for n in names]
    want, norm = _numpy_adamw(current, gradient, mu, nu, 0, 1e-3, trainer.train_config.optimizer)
    assert metrics["loss"] == pytest.approx(float(loss.mean()), rel=1e-6)
    assert metrics["grad_norm"] == pytest.approx(float(norm), rel=1e-5)
    state = trainer.state_dict()
    for name, value in zip(names, want, strict=True):
        # Parameters with a zero true gradient (the key biases) move by ~lr on noise.
        atol = 2e-3 if name.endswith("attn.key.bias") else 1e-6
        np.testing.assert_allclose(state[f"params/{name}"], value, rtol=0, atol=atol, err_msg=name)
    assert int(state["opt/count"]) == 1


LORA = {"llm_lora": LoRAConfig(rank=4, alpha=8.0), "expert_lora": LoRAConfig(rank=2, alpha=2.0)}


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_lora_forward_uses_the_merged_weights(family):
    trainer, config, params = _trainer(family, ema_decay=None, **LORA)
    observation, actions, noise, time = _batch(config, 0)
    merged = Pi0Model.from_params(config, merge_lora(params, trainer.train_config))
    metrics = trainer.step(observation, actions, noise, time, lr=0.0)
    want = merged.compute_loss(observation, actions, noise, time).mean()
    assert metrics["loss"] == pytest.approx(float(want), rel=1e-5)


def test_lora_trains_adapters_and_unfrozen_params_only():
    trainer, config, params = _trainer(**LORA)
    for step in range(3):
        trainer.step(*_batch(config, step), lr=1e-2)
    state = trainer.state_dict()
    train = trainer.train_config
    frozen = [name for name in params if not is_trainable(name, train)]
    adapters = [name for name in params if name.endswith((".lora_a", ".lora_b"))]
    assert frozen and adapters and any(name.startswith("vision.") for name in params)
    for name in frozen:
        np.testing.assert_array_equal(state[f"params/{name}"], params[name], err_msg=name)
        assert f"opt/mu/{name}" not in state and f"opt/nu/{name}" not in state and f"ema/{name}" not in state
    for name in [*adapters, "vision.head.kernel", "action_out_proj.kernel"]:
        assert not np.array_equal(state[f"params/{name}"], params[name]), name
        assert f"opt/mu/{name}" in state and f"ema/{name}" in state
    assert not any(p.requires_grad for n, p in trainer.module.named_parameters() if n.startswith("gemma.embedding"))
    served = trainer.inference_params()
    assert set(served) == set(pi0_weight_schema(config))
    ema = {name: state[f"ema/{name}"] if f"ema/{name}" in state else state[f"params/{name}"] for name in params}
    want = merge_lora(ema, train)["llm.layers.attn.q_proj"]
    np.testing.assert_allclose(served["llm.layers.attn.q_proj"], want, rtol=0, atol=1e-7)


def test_ema_closed_form():
    decay = 0.9
    trainer, config, params = _trainer(ema_decay=decay)
    name = "action_out_proj.kernel"
    history = [params[name].astype(np.float64)]
    steps = 4
    for step in range(steps):
        trainer.step(*_batch(config, step), lr=1e-2)
        history.append(trainer.state_dict()[f"params/{name}"].astype(np.float64))
    # ema_n = d^n θ_0 + (1 - d) Σ_{k=1..n} d^(n-k) θ_k
    want = decay**steps * history[0] + sum((1 - decay) * decay ** (steps - k) * history[k] for k in range(1, steps + 1))
    np.testing.assert_allclose(trainer.state_dict()[f"ema/{name}"], want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(trainer.inference_params()[name], trainer.state_dict()[f"ema/{name}"])


def test_resume_is_bit_exact():
    first, config, _ = _trainer(expert_lora=LORA["expert_lora"])
    for step in range(2):
        first.step(*_batch(config, step), lr=1e-3)
    saved = first.state_dict()
    second, _, _ = _trainer(expert_lora=LORA["expert_lora"])
    second.load_state_dict(saved)
    assert all(np.array_equal(v, second.state_dict()[k]) for k, v in saved.items())
    for step in range(2, 4):
        a = first.step(*_batch(config, step), lr=1e-3)
        b = second.step(*_batch(config, step), lr=1e-3)
        assert a == b
    end_first, end_second = first.state_dict(), second.state_dict()
    assert set(end_first) == set(end_second)
    for key, value in end_first.items():
        np.testing.assert_array_equal(end_second[key], value, err_msg=key)


def test_load_state_dict_rejects_unknown_and_missing_keys():
    trainer, _, _ = _trainer()
    state = trainer.state_dict()
    with pytest.raises(WeightsError, match="unexpected"):
        trainer.load_state_dict({**state, "opt/mu/nope": np.zeros(1)})
    del state["opt/nu/vision.head.bias"]
    with pytest.raises(WeightsError, match=r"vision\.head\.bias"):
        trainer.load_state_dict(state)


def test_bad_train_configs_are_refused():
    with pytest.raises(InputError, match="precision"):
        _trainer(precision="float16")
    with pytest.raises(InputError, match="fsdp_devices"):
        _trainer(fsdp_devices=3)


def test_bfloat16_step_is_close_to_float32():
    results = {}
    for precision in ("float32", "bfloat16"):
        trainer, config, _ = _trainer("pi05", precision=precision)
        results[precision] = trainer.step(*_batch(config, 0), lr=1e-3)
    assert results["bfloat16"]["loss"] == pytest.approx(results["float32"]["loss"], rel=2e-2)
    assert results["bfloat16"]["grad_norm"] == pytest.approx(results["float32"]["grad_norm"], rel=5e-2)


@pytest.mark.parametrize("family", ["pi0", "pi05"])
def test_gradient_checkpointing_gives_the_same_gradients(family):
    config = tiny_pi0_config(family)
    model = Pi0Model.from_params(config, seeded_params(config))
    batch = _batch(config, 0)
    loss, grads = model.loss_gradients(*batch)
    model.module.gemma.gradient_checkpointing = model.module.vision.gradient_checkpointing = True
    loss_ckpt, grads_ckpt = model.loss_gradients(*batch)
    np.testing.assert_array_equal(loss_ckpt, loss)
    for name, grad in grads.items():
        np.testing.assert_allclose(grads_ckpt[name], grad, rtol=0, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("fsdp_devices", [1, 2], ids=["ddp", "fsdp2"])
def test_two_process_data_parallel_equals_one_process(tmp_path, fsdp_devices):
    """``torchrun --nproc_per_node 2`` (gloo, CPU), each rank on 2 of 4 rows, against one
    process on all 4: same metrics and parameters up to float32 reduction order."""
    sys.path.insert(0, str(HERE))
    try:
        from distributed_step import run
    finally:
        sys.path.remove(str(HERE))
    out = tmp_path / "state.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(HERE / "distributed_step.py"), str(out), str(fsdp_devices)]
    subprocess.run(command, check=True, env=env, timeout=300, capture_output=True)
    got = np.load(out)
    want = run(None, 1)
    assert set(got.files) == set(want)
    for key, value in want.items():
        if key.startswith("metrics/"):
            np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)
        elif key.startswith(("params/", "ema/")):
            # Adam turns the round-off of gradients that are zero in exact arithmetic
            # (the attention key biases) into steps of ~lr.
            atol = 2e-3 if key.endswith("attn.key.bias") else 1e-4
            np.testing.assert_allclose(got[key], value, rtol=0, atol=atol, err_msg=key)
        elif key.startswith(("opt/mu/", "opt/nu/")):
            np.testing.assert_allclose(got[key], value, rtol=1e-3, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
