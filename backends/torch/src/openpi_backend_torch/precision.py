"""Exact float32 arithmetic: IEEE settings for a model call, correctly rounded powers.

PyTorch may silently run float32 matmuls and convolutions in TF32 (cuDNN
convolutions default to it) or, through oneDNN, in bfloat16, and cuBLAS may
reduce bfloat16 products in bfloat16. The reference computes float32 as IEEE
float32 and accumulates bfloat16 matmuls in float32, so every public model call
runs inside :func:`exact_float32`. The previous settings are restored on exit,
so the process-wide configuration of the caller is left as it was.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

_FP32_PRECISION_KNOBS = (
    torch.backends,
    torch.backends.cuda.matmul,
    torch.backends.cudnn.conv,
    torch.backends.cudnn.rnn,
    torch.backends.mkldnn.matmul,
    torch.backends.mkldnn.conv,
    torch.backends.mkldnn.rnn,
)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Run float32 ops in IEEE float32 and reduce bfloat16 matmuls in float32."""
    saved_precision = [knob.fp32_precision for knob in _FP32_PRECISION_KNOBS]
    saved_bf16_reduction = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    try:
        for knob in _FP32_PRECISION_KNOBS:
            knob.fp32_precision = "ieee"
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        yield
    finally:
        for knob, value in zip(_FP32_PRECISION_KNOBS, saved_precision, strict=True):
            knob.fp32_precision = value
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = saved_bf16_reduction


def pow_float32(base: float, exponent: Tensor) -> Tensor:
    """``base ** exponent`` for float32 ``exponent``, correctly rounded to float32.

    The reference's XLA computes float32 powers correctly rounded; torch's
    vectorised float32 ``pow`` may be one ulp off, which at t=1 moves the
    highest-frequency time features by ~1e-4. Only the power goes through float64:
    its result is rounded to float32 before any further arithmetic.
    """
    return torch.pow(base, exponent.to(torch.float64)).to(torch.float32)
