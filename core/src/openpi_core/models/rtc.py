"""Real-time chunking (RTC): the backend-neutral numbers of guided sampling.

Black, Galliker and Levine, "Real-Time Execution of Action Chunking Flow Policies"
(arXiv 2506.07339). While a robot executes one chunk, the next is sampled. The first
``d`` steps of the new chunk (the *inference delay*) will have run from the previous
chunk before the new one arrives, so the new chunk is inpainted to agree with the
previous chunk there: every denoising step estimates the clean chunk with one Euler
jump, weighs its distance to the previous chunk with a soft mask, and adds the
vector-Jacobian product of that weighted error through the denoiser to the velocity.

Time convention. The paper integrates ``τ`` from 0 (noise) to 1 (data) with velocity
``v ≈ actions - noise``. This project, like openpi, integrates ``t = 1 - τ`` from 1
(noise) to 0 (data) with velocity ``u = -v ≈ noise - actions`` and Euler steps
``x ← x + dt * u``, ``dt = -1 / num_steps``. In our terms one guided step is::

    clean = x_t - t * u(x_t, t)                       # paper: x_τ + (1 - τ) v
    g = vjp(clean w.r.t. x_t)((prefix - clean) * W)   # the same vector in both conventions
    x ← x_t + dt * (u - w(t) * g)                     # paper: x_τ + (1/n) (v + w g)

with ``W`` from :func:`prefix_weights` and ``w(t)`` from :func:`guidance_weights`.
The backends do the framework math (the vector-Jacobian product); this module holds
what they share and validates the caller's arguments once.

Shapes: ``B`` batch, ``H`` action horizon, ``A`` action dim, ``N`` denoising steps.
"""

import attrs
import numpy as np

from openpi_core.errors import InputError

DEFAULT_MAX_GUIDANCE_WEIGHT = 5.0
"""β, the clip on the guidance weight: the paper's value and its reference code's default."""


def prefix_weights(horizon: int, inference_delay: int | np.ndarray, execution_horizon: int) -> np.ndarray:
    """The paper's soft mask ``W`` over the new chunk's steps: float32 ``[..., H]``.

    With ``d = inference_delay`` and ``s = execution_horizon``, step ``i`` gets weight 1
    for ``i < d`` (executed from the previous chunk while this one is computed),
    ``c_i (e^{c_i} - 1) / (e - 1)`` with ``c_i = (H - s - i) / (H - s - d + 1)`` for
    ``d <= i < H - s`` (an exponential decay towards 0), and 0 for ``i >= H - s`` (steps
    the previous chunk does not reach). As in the paper's reference code, ``d`` larger
    than ``H - s`` is lowered to ``H - s``, so the mask never reaches past ``H - s``.

    Args:
        horizon: ``H``.
        inference_delay: ``d``, an int or an int array (``[B]`` gives ``[B, H]``), each in ``[0, H]``.
        execution_horizon: ``s``, an int in ``[0, H]``.
    """
    delay = np.asarray(inference_delay, dtype=np.int64)[..., None]
    end = horizon - execution_horizon
    start = np.minimum(delay, end)
    steps = np.arange(horizon)
    c = np.clip((end - steps) / (end - start + 1), 0.0, 1.0)
    decay = c * np.expm1(c) / np.expm1(1.0)
    weights = np.where(steps < start, 1.0, np.where(steps < end, decay, 0.0))
    return weights.astype(np.float32)


def sampler_times(num_steps: int) -> np.ndarray:
    """The flow times float32 ``[N]`` at which an ``num_steps``-step sampler evaluates
    the velocity: ``t = 1`` first, then ``t + dt`` accumulated in float32 as the samplers
    carry it, ending at ``1/N`` (never at 0)."""
    dt = np.float32(-1.0) / np.float32(num_steps)
    times = np.empty(num_steps, np.float32)
    time = np.float32(1.0)
    for step in range(num_steps):
        times[step] = time
        time = np.float32(time + dt)
    return times


def guidance_weights(num_steps: int, max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT) -> np.ndarray:
    """The guidance weight of each denoising step, float32 ``[N]``.

    The paper's ``min(β, (1 - τ) / (τ r_τ²))`` with ``r_τ² = (1 - τ)² / (τ² + (1 - τ)²)``
    is, in our time ``t = 1 - τ``, ``min(β, (t² + (1 - t)²) / (t (1 - t)))``, evaluated at
    :func:`sampler_times`. It is infinite at ``t = 1`` (the first step), so there it is β;
    it dips to 2 at ``t = 1/2`` and grows again towards the data end.
    """
    t = sampler_times(num_steps).astype(np.float64)
    spread = t * (1.0 - t)
    ratio = np.divide(t**2 + (1.0 - t) ** 2, spread, out=np.full_like(t, np.inf), where=spread > 0)
    return np.minimum(ratio, max_guidance_weight).astype(np.float32)


@attrs.frozen
class Guidance:
    """What one guided sampling call needs, checked, in float32, and owned (writable copies).

    Attributes:
        prefix_actions: ``[B, H, A]`` the previous chunk, aligned to the new chunk's steps.
        prefix_weights: ``[B, H]`` the soft mask ``W`` per example (:func:`prefix_weights`).
        step_weights: ``[N]`` the guidance weight of each step (:func:`guidance_weights`).
    """

    prefix_actions: np.ndarray
    prefix_weights: np.ndarray
    step_weights: np.ndarray


def guidance(
    prefix_actions: np.ndarray | None,
    inference_delay: int | np.ndarray | None,
    execution_horizon: int | None,
    max_guidance_weight: float,
    *,
    shape: tuple[int, int, int],
    num_steps: int,
) -> Guidance | None:
    """Check a ``sample_actions`` call's RTC arguments against the chunk ``shape``
    ``(B, H, A)``; None when ``prefix_actions`` is None (plain sampling, where the other
    RTC arguments are not used).

    Raises:
        InputError: ``prefix_actions`` is not ``[B, H, A]`` or not finite;
            ``inference_delay`` or ``execution_horizon`` is missing while a prefix is
            given, not an integer, outside ``[0, H]``, or the delay is neither one
            integer nor ``[B]``; ``max_guidance_weight`` is negative or not finite.
    """
    if prefix_actions is None:
        return None
    batch, horizon, _ = shape
    prefix = np.asarray(prefix_actions, dtype=np.float32)
    if prefix.shape != tuple(shape):
        raise InputError(
            f"prefix_actions should have shape {list(shape)} (batch, horizon, action dim), got {list(prefix.shape)}"
        )
    if not np.all(np.isfinite(prefix)):
        raise InputError("prefix_actions holds NaN or inf")
    if inference_delay is None or execution_horizon is None:
        missing = "inference_delay" if inference_delay is None else "execution_horizon"
        raise InputError(f"{missing} is required with prefix_actions")
    delay = _steps("inference_delay", inference_delay, horizon)
    if delay.shape not in ((), (batch,)):
        raise InputError(f"inference_delay should be one integer or have shape [{batch}], got {list(delay.shape)}")
    execution = _steps("execution_horizon", execution_horizon, horizon)
    if execution.shape != ():
        raise InputError(f"execution_horizon should be one integer, got shape {list(execution.shape)}")
    if not (np.isfinite(max_guidance_weight) and max_guidance_weight >= 0):
        raise InputError(f"max_guidance_weight should be finite and at least 0, got {max_guidance_weight}")
    weights = np.broadcast_to(prefix_weights(horizon, delay, int(execution)), (batch, horizon))
    return Guidance(
        prefix_actions=np.array(prefix),
        prefix_weights=np.array(weights),
        step_weights=guidance_weights(num_steps, max_guidance_weight),
    )


def _steps(name: str, value: int | np.ndarray, horizon: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise InputError(f"{name} should be an integer number of steps, got {array.dtype} {value!r}")
    if np.any(array < 0) or np.any(array > horizon):
        raise InputError(f"{name} should lie in [0, {horizon}] (the action horizon), got {array.tolist()}")
    return array.astype(np.int64)
