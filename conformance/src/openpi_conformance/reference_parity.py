"""Checks of one backend against numbers recorded from openpi's own models."""

import functools
from pathlib import Path

import numpy as np

from openpi_conformance.results import CheckResult, compare
from openpi_core.plugins import get_backend
from openpi_core.reference import ReferenceSet, load_reference

REFERENCE_BOUND = 1e-5

WEIGHT_FORMS = {
    "openpi-jax-safetensors": lambda ref: ref.openpi_params_path,
    "openpi-jax-orbax": lambda ref: ref.orbax_params_path,
    "openpi-torch": lambda ref: ref.torch_state_path,
}
"""The ways a reference directory can hold its weights -> where, given the loaded set."""


@functools.cache
def reference_set(path: str) -> ReferenceSet:
    return load_reference(Path(path))


def available_forms(path: str) -> list[str]:
    ref = reference_set(path)
    return [form for form, where in WEIGHT_FORMS.items() if where(ref).exists()]


def reference_checks(path: str, backend: str, form: str) -> list[CheckResult]:
    """Prefix embeddings, velocity at t=1, actions for each recorded step count, and the
    loss with the recorded noise and time, each within :data:`REFERENCE_BOUND`."""
    ref = reference_set(path)
    config = ref.config
    model = get_backend(backend).load_model(WEIGHT_FORMS[form](ref), config)
    if ref.family == "pi0_fast":
        return fast_reference_checks(ref, model, f"{ref.family}/{backend}/{form}")
    observation = ref.observation()
    io = ref.io
    name = f"{ref.family}/{backend}/{form}"
    results = []

    tokens, mask, _ = model.embed_prefix(observation)
    per_camera = config.vision.num_patches
    text_start = per_camera * len(config.image_keys)
    prompt_length = observation.tokenized_prompt.shape[1]
    recorded_slices = np.concatenate(
        [tokens[:, :per_camera], tokens[:, text_start : text_start + prompt_length]], axis=1
    )
    results.append(
        compare(
            f"{name}/prefix_embeddings", recorded_slices, io["outputs/prefix_tokens_base0_and_lang"], REFERENCE_BOUND
        )
    )
    results.append(compare(f"{name}/prefix_mask", mask, io["outputs/prefix_mask"].astype(bool), 0.0))

    noise = io["inputs/noise"]
    batch = noise.shape[0]
    velocity = model.velocity(observation, noise, np.ones(batch, np.float32))
    results.append(compare(f"{name}/velocity_t1", velocity, io["outputs/v_t_at_t1"], REFERENCE_BOUND))
    for output, steps in sorted(ref.recorded_num_steps().items()):
        actions = model.sample_actions(observation, noise=noise, num_steps=steps)
        results.append(compare(f"{name}/actions_{steps}_steps", actions, io[output], REFERENCE_BOUND))
    loss = model.compute_loss(observation, io["loss/actions"], noise=io["loss/noise"], time=io["loss/time"])
    results.append(compare(f"{name}/loss", loss, io["loss/loss"], REFERENCE_BOUND))
    return results


FAST_LOGITS_BOUND = 5e-4
FAST_LOSS_BOUND = 3e-5
"""π0-FAST's reference model has its language-model weights tripled, which makes it very
sensitive to float32 rounding: openpi's recorded logits are themselves up to 1.9e-4 away
from a float64 evaluation of the same model (loss: 6e-6), and a half-ulp perturbation of
the weights moves logits by 7e-5. Tokens are compared exactly, as the reference advises."""


def fast_reference_checks(ref: ReferenceSet, model, name: str) -> list[CheckResult]:
    """π0-FAST: prompt embeddings, prefill length, greedy tokens and the logits that chose
    them, and the training loss."""
    io = ref.io
    observation = ref.observation()
    tokens, mask, _ = model.embed_prefix(observation)
    text_start = ref.config.vision.num_patches * len(ref.config.image_keys)
    results = [
        compare(f"{name}/prompt_embeddings", tokens[:, text_start:], io["outputs/prefix_tokens"], REFERENCE_BOUND),
        compare(f"{name}/prefill_len", mask.sum(axis=1), io["outputs/prefill_len"], 0.0),
    ]
    steps = io["outputs/output_tokens"].shape[1]
    _, logits = model.decode(observation, steps)
    recorded_logits = io["outputs/decode_step_logits"]
    results.append(compare(f"{name}/decode_step_logits", logits, recorded_logits, FAST_LOGITS_BOUND))
    greedy = model.sample_actions(observation, num_steps=steps)
    results.append(compare(f"{name}/greedy_tokens", greedy, io["outputs/output_tokens"], 0.0))
    loss = model.compute_loss(ref.observation("loss"))
    results.append(compare(f"{name}/loss", loss, io["loss/loss"], FAST_LOSS_BOUND))
    return results
