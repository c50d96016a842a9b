"""Transforms between a robot-neutral data dict and a π0/π0.5 model input."""

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.fast import FASTPromptTokenizer
from openpi_core.tokenizers import PaligemmaTokenizer
from openpi_core.transforms.base import DataTransform


@attrs.frozen
class TokenizePrompt:
    """Replaces ``prompt`` with ``tokenized_prompt`` and ``tokenized_prompt_mask``.

    With ``discrete_state_input`` (π0.5), the normalized state goes into the prompt text.
    """

    tokenizer: PaligemmaTokenizer
    discrete_state_input: bool = False

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if "prompt" not in data:
            raise InputError(f"a prompt is required (none came, and no default prompt is set); got keys {sorted(data)}")
        data = dict(data)
        prompt = data.pop("prompt")
        if isinstance(prompt, bytes):
            prompt = prompt.decode()
        state = np.asarray(data["state"]) if self.discrete_state_input else None
        data["tokenized_prompt"], data["tokenized_prompt_mask"] = self.tokenizer.tokenize(str(prompt), state)
        return data


def with_tokenizer(
    transform: DataTransform,
    model_path: str | Path | None,
    vocab_size: int,
    fast_tokenizer: str | Path | None = None,
) -> DataTransform:
    """``transform`` with the tokenizers it holds swapped for a model's own, checked to
    fit in the model's vocabulary.

    Args:
        model_path: a SentencePiece model for the PaliGemma prompt tokenizer (of
            :class:`TokenizePrompt` and of π0-FAST's transforms); None keeps the default.
        vocab_size: the model's vocabulary size.
        fast_tokenizer: π0-FAST's action tokenizer directory or URL (see
            :class:`~openpi_core.fast.FASTActionTokenizer`); None keeps the default.

    Raises:
        InputError: the prompt tokenizer has more pieces than ``vocab_size``.
    """
    tokenizer = getattr(transform, "tokenizer", None)
    if isinstance(tokenizer, FASTPromptTokenizer):
        if model_path is not None or fast_tokenizer is not None:
            paligemma = tokenizer.paligemma if model_path is None else PaligemmaTokenizer(tokenizer.max_len, model_path)
            tokenizer = FASTPromptTokenizer(
                tokenizer.max_len,
                paligemma,
                tokenizer.action_tokenizer_source if fast_tokenizer is None else fast_tokenizer,
                fast_skip_tokens=tokenizer.fast_skip_tokens,
            )
            transform = attrs.evolve(transform, tokenizer=tokenizer)
        _check_pieces(tokenizer.paligemma, vocab_size)
        return transform
    if not isinstance(tokenizer, PaligemmaTokenizer):
        return transform
    if model_path is not None:
        tokenizer = PaligemmaTokenizer(tokenizer.max_len, model_path)
        transform = attrs.evolve(transform, tokenizer=tokenizer)
    _check_pieces(tokenizer, vocab_size)
    return transform


def _check_pieces(tokenizer: PaligemmaTokenizer, vocab_size: int) -> None:
    pieces = tokenizer.processor.get_piece_size()
    if pieces > vocab_size:
        raise InputError(
            f"the prompt tokenizer {tokenizer.model_path} has {pieces} pieces; the model's vocabulary holds "
            f"vocab_size={vocab_size}, so it should have at most that many"
        )
