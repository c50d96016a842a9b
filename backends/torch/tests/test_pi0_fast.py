"""π0-FAST in the torch backend against openpi's recorded tiny model (``reference/pi0_fast``).

Measured on CPU in float32 (max abs difference to the reference):

* prompt part of the prefix embeddings: 0.0 (bit-exact); ``prefill_len`` exact;
* ``decode_step_logits`` (16 steps, |logit| up to 3.5): 8.8e-5. This is float32 noise of
  this deliberately sensitive model (its LLM weights were scaled by 3): swapping the CPU
  attention kernel for the math one moves our own logits by 6.2e-5, and a 6e-8 relative
  perturbation of every weight by 7.3e-5. Hence the 1e-4 bound below has little headroom
  by nature; greedy tokens are unaffected (the smallest top-1/top-2 gap is 0.010);
* greedy ``output_tokens``: equal;
* ``loss/loss`` (~7.05): 3.8e-6.

bfloat16 (bf16 weights and matmuls, float32 islands), against the float32 reference: the
step-0 logits differ by at most 0.33 (mean 0.07), the full-prefix logits by at most 1.4
(mean 0.10, |logit| up to 4.0) and the loss by 0.015 / 0.032. Almost all of it comes
from the bf16 trunk; computing the logits in float32 instead changes nothing visible.
Greedy decoding then agrees for the first 5 tokens of both rows, which is expected of
a random model with top-1/top-2 logit gaps down to 0.010.
"""

import attrs
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from openpi_backend_torch.pi0_fast import Pi0FASTModel
from openpi_core.errors import InputError
from openpi_core.models.pi0_weights import pi0_fast_weight_schema, rename_from_openpi_jax
from openpi_core.reference import load_reference

# Against openpi's recorded logits, the bound of the JAX backend's test and of
# `pi conformance --reference`: the reference model's tripled weights make its logits
# sensitive to float32 summation order (openpi's own are 1.9e-4 from float64), and the
# torch CPU kernels' order differs between machines (8.8e-5 on one, 1.2e-4 on another).
LOGITS_ATOL = 5e-4
LOSS_ATOL = 1e-5
EMBED_ATOL = 1e-5
BF16_STEP0_LOGITS_MAX_ABS = 0.8
BF16_STEP0_LOGITS_MEAN_ABS = 0.15
BF16_LOSS_ATOL = 0.1


@pytest.fixture(scope="module")
def ref(reference_root):
    return load_reference(reference_root / "pi0_fast")


@pytest.fixture(scope="module")
def params(ref):
    return rename_from_openpi_jax(load_file(str(ref.openpi_params_path)), pi0_fast_weight_schema(ref.config))


@pytest.fixture(scope="module")
def model(ref, params):
    return Pi0FASTModel.from_params(ref.config, params)


@pytest.fixture(scope="module")
def greedy(ref, model):
    """``decode`` of the recorded inference prompt, as many steps as recorded."""
    return model.decode(ref.observation("inputs"), ref.io["outputs/output_tokens"].shape[1])


def test_prefix_embeddings(ref, model):
    io = ref.io
    tokens, valid, ar = model.embed_prefix(ref.observation("inputs"))
    prompt = io["outputs/prefix_tokens"]
    image_tokens = len(ref.config.image_keys) * ref.config.vision.num_patches
    assert tokens.shape == (2, image_tokens + prompt.shape[1], ref.config.llm.width)
    np.testing.assert_allclose(tokens[:, image_tokens:], prompt, rtol=0, atol=EMBED_ATOL)
    np.testing.assert_array_equal(valid.sum(axis=1), io["outputs/prefill_len"])
    assert ar.shape == valid.shape
    assert not ar.any()


def test_prefill_len_and_right_alignment(ref, model):
    """The prefill right-aligns every row: its valid tokens are the last ``prefill_len`` slots."""
    module = model.module
    with torch.inference_mode():
        inputs = model._inputs(ref.observation("inputs"))
        tokens, valid, ar = module.embed_prefix(inputs)
        from openpi_backend_torch.pi0_fast import make_attn_mask, right_align

        _, aligned, _ = right_align(tokens, valid, make_attn_mask(valid, ar))
        _, cache = module.prefill(inputs, num_steps=2)
    prefill_len = ref.io["outputs/prefill_len"]
    np.testing.assert_array_equal(cache.prefill_len.numpy(), prefill_len)
    for row, count in enumerate(prefill_len):
        assert not aligned[row, : cache.prefill_size - count].any()
        assert aligned[row, cache.prefill_size - count :].all()
    # Generated token s is fed at position prefill_len + s + 1.
    steps = np.arange(ref.io["outputs/decode_positions"].shape[1])
    np.testing.assert_array_equal(prefill_len[:, None] + steps + 1, ref.io["outputs/decode_positions"])


def test_greedy_tokens_and_logits(ref, model, greedy):
    io = ref.io
    tokens, logits = greedy
    assert tokens.dtype == np.int32 and logits.dtype == np.float32
    np.testing.assert_array_equal(tokens, io["outputs/output_tokens"])
    np.testing.assert_allclose(logits, io["outputs/decode_step_logits"], rtol=0, atol=LOGITS_ATOL)


def test_sample_actions_returns_the_greedy_tokens(ref, model):
    tokens = model.sample_actions(ref.observation("inputs"), num_steps=16)
    assert tokens.dtype == np.int32 and tokens.shape == (2, 16)
    np.testing.assert_array_equal(tokens, ref.io["outputs/output_tokens"])


def test_loss(ref, model):
    loss = model.compute_loss(ref.observation("loss"))
    assert loss.dtype == np.float32 and loss.shape == (2,)
    np.testing.assert_allclose(loss, ref.io["loss/loss"], rtol=0, atol=LOSS_ATOL)


def test_prefix_logits_give_the_loss(ref, model):
    """The training pass over the whole prompt, scored by hand, gives :meth:`compute_loss`."""
    observation = ref.observation("loss")
    logits = model.prefix_logits(observation)
    prompt = observation.tokenized_prompt
    assert logits.shape == (2, 3 * ref.config.vision.num_patches + prompt.shape[1], ref.config.vocab_size)
    prompt_logits = logits[:, -prompt.shape[1] : -1].astype(np.float64)
    logp = prompt_logits - np.log(np.exp(prompt_logits).sum(axis=-1, keepdims=True))
    token_logp = np.take_along_axis(logp, prompt[:, 1:, None], axis=-1)[..., 0]
    mask = observation.token_loss_mask[:, 1:]
    by_hand = -(token_logp * mask).sum(axis=-1) / mask.sum(axis=-1)
    np.testing.assert_allclose(by_hand, ref.io["loss/loss"], rtol=0, atol=LOSS_ATOL)


def test_rows_stop_at_eos_and_the_loop_when_all_rows_have(ref, params):
    """With the EOS id set to a token both rows emit (869: row 0 at step 0, row 1 at step
    7), each row's tokens are zero after its EOS and decoding ends after step 7. Stopped
    rows keep feeding their pick, so every logit still equals the reference's."""
    io = ref.io
    model = Pi0FASTModel.from_params(attrs.evolve(ref.config, eos_token=869), params)
    observation = ref.observation("inputs")
    tokens, logits = model.decode(observation, 16)
    expected = io["outputs/output_tokens"][:, :8].astype(np.int32)
    expected[0, 1:] = 0
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_allclose(logits, io["outputs/decode_step_logits"][:, :8], rtol=0, atol=LOGITS_ATOL)
    padded = np.zeros((2, 16), np.int32)
    padded[:, :8] = expected
    np.testing.assert_array_equal(model.sample_actions(observation), padded)


def test_one_row_stopping_does_not_stop_the_other(ref, params):
    io = ref.io
    model = Pi0FASTModel.from_params(attrs.evolve(ref.config, eos_token=783), params)
    tokens = model.sample_actions(ref.observation("inputs"), num_steps=16)
    expected = io["outputs/output_tokens"].astype(np.int32)
    expected[0, 7:] = 0  # row 0 emits 783 at step 6; row 1 never does
    np.testing.assert_array_equal(tokens, expected)


def test_sampling_is_seeded(ref, model):
    observation = ref.observation("inputs")
    first = model.sample_actions(observation, num_steps=6, seed=3, temperature=1.0)
    np.testing.assert_array_equal(model.sample_actions(observation, num_steps=6, seed=3, temperature=1.0), first)
    assert not np.array_equal(model.sample_actions(observation, num_steps=6, seed=4, temperature=1.0), first)
    # A tiny temperature makes the logit gaps dwarf the Gumbel noise: greedy again.
    cold = model.sample_actions(observation, num_steps=6, seed=3, temperature=1e-6)
    np.testing.assert_array_equal(cold, ref.io["outputs/output_tokens"][:, :6])


@pytest.fixture()
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_decode_step_has_no_graph_breaks(ref, model, fresh_dynamo, temperature):
    module = model.module
    with torch.inference_mode():
        logits, cache = module.prefill(model._inputs(ref.observation("inputs")), num_steps=4)
        token = logits.argmax(dim=-1)
        done = torch.zeros(2, dtype=torch.bool)
        uniform = torch.rand(logits.shape) if temperature > 0 else None
        explanation = torch._dynamo.explain(module.decode_step)(
            token, done, torch.tensor(0), cache, temperature, uniform
        )
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_decoding_equals_eager(ref, params, greedy, fresh_dynamo):
    """``compile`` swaps in ``torch.compile(decode_step, fullgraph=True)`` (``aot_eager``
    traces and functionalises as inductor would, without generating code): one graph
    serves every step, the step index being a tensor and the cache written in place."""
    model = Pi0FASTModel.from_params(ref.config, params)
    model.compile(backend="aot_eager")
    tokens, logits = model.decode(ref.observation("inputs"), 16)
    np.testing.assert_array_equal(tokens, greedy[0])
    np.testing.assert_array_equal(logits, greedy[1])


def test_state_dict_round_trip_is_bit_identical(ref, params, model):
    exported = model.state_dict()
    assert set(exported) == set(pi0_fast_weight_schema(ref.config))
    for name, value in params.items():
        assert exported[name].dtype == np.float32
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    again = Pi0FASTModel.from_params(ref.config, exported).state_dict()
    assert all(np.array_equal(again[name], value) for name, value in exported.items())


def test_loss_gradients(ref, model):
    observation = ref.observation("loss")
    loss, grads = model.loss_gradients(observation)
    np.testing.assert_allclose(loss, ref.io["loss/loss"], rtol=0, atol=LOSS_ATOL)
    assert set(grads) == set(pi0_fast_weight_schema(ref.config))
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    # The tied embedding and the vision tower are trained too.
    assert np.abs(grads["llm.embedding"]).max() > 0
    assert np.abs(grads["vision.patch_embed.kernel"]).max() > 0
    # A central difference along the gradient of the final norm scale agrees.
    name = "llm.final_norm.scale"
    direction = grads[name] / np.linalg.norm(grads[name])
    step = 1e-2
    weights = model.state_dict()
    values = []
    for sign in (1.0, -1.0):
        shifted = dict(weights, **{name: (weights[name] + sign * step * direction).astype(np.float32)})
        values.append(Pi0FASTModel.from_params(ref.config, shifted).compute_loss(observation).mean())
    finite_difference = (values[0] - values[1]) / (2 * step)
    np.testing.assert_allclose(finite_difference, np.linalg.norm(grads[name]), rtol=2e-2)


def test_input_errors(ref, model):
    observation = ref.observation("inputs")
    with pytest.raises(InputError, match="num_steps"):
        model.sample_actions(observation, num_steps=0)
    with pytest.raises(InputError, match="temperature"):
        model.sample_actions(observation, temperature=-1.0)
    with pytest.raises(InputError, match="token_loss_mask"):
        model.compute_loss(attrs.evolve(observation, token_loss_mask=None))
    with pytest.raises(InputError, match="tokenized_prompt"):
        model.embed_prefix(attrs.evolve(observation, tokenized_prompt=None, tokenized_prompt_mask=None))


def test_backend_builds_fast_checkpoints(ref):
    from openpi_backend_torch.backend import TorchBackend

    backend = TorchBackend()
    assert "pi0_fast" in backend.families
    model = backend.load_model(str(ref.openpi_params_path), ref.config)
    assert isinstance(model, Pi0FASTModel)
    assert model.config == ref.config


def test_bfloat16_logits_are_close_to_float32(ref, params):
    bf16 = Pi0FASTModel.from_params(attrs.evolve(ref.config, dtype="bfloat16"), params)
    module = bf16.module
    assert module.gemma.layers[0].experts[0].qkv.weight.dtype == torch.bfloat16
    assert module.gemma.embedding.weight.dtype == torch.bfloat16
    assert module.gemma.final_norms[0].scale.dtype == torch.float32
    assert module.vision.patch_embed.weight.dtype == torch.float32
    _, logits = bf16.decode(ref.observation("inputs"), 1)
    assert logits.dtype == np.float32
    error = np.abs(logits[:, 0] - ref.io["outputs/decode_step_logits"][:, 0])
    assert error.max() < BF16_STEP0_LOGITS_MAX_ABS
    assert error.mean() < BF16_STEP0_LOGITS_MEAN_ABS
    loss = bf16.compute_loss(ref.observation("loss"))
    np.testing.assert_allclose(loss, ref.io["loss/loss"], rtol=0, atol=BF16_LOSS_ATOL)
