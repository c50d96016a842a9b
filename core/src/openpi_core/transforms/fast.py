"""Transforms between a robot-neutral data dict and a π0-FAST model input or output."""

from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.fast import FASTPromptTokenizer


@attrs.frozen
class TokenizeFASTInputs:
    """Replaces ``prompt`` with π0-FAST's token sequence built from the prompt, the
    normalized ``state`` and, when present (training), the normalized ``actions``:
    ``tokenized_prompt``, ``tokenized_prompt_mask``, ``token_ar_mask``, ``token_loss_mask``."""

    tokenizer: FASTPromptTokenizer

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if "prompt" not in data:
            raise InputError(f"a prompt is required (none came, and no default prompt is set); got keys {sorted(data)}")
        if "state" not in data:
            raise InputError(
                f"π0-FAST writes the state into the prompt, so data needs 'state'; got keys {sorted(data)}"
            )
        data = dict(data)
        prompt = data.pop("prompt")
        if isinstance(prompt, np.ndarray):
            prompt = prompt.item()
        if isinstance(prompt, bytes):
            prompt = prompt.decode()
        tokens, mask, ar_mask, loss_mask = self.tokenizer.tokenize(str(prompt), data["state"], data.get("actions"))
        data["tokenized_prompt"], data["tokenized_prompt_mask"] = tokens, mask
        data["token_ar_mask"], data["token_loss_mask"] = ar_mask, loss_mask
        return data


@attrs.frozen
class ExtractFASTActions:
    """Replaces the generated token ids in ``actions`` (``[S]``, one example) with the
    action chunk ``[action_horizon, action_dim]`` they encode (zeros when they encode none)."""

    tokenizer: FASTPromptTokenizer
    action_horizon: int
    action_dim: int

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if "actions" not in data:
            return data
        tokens = np.asarray(data["actions"])
        if tokens.ndim != 1:
            raise InputError(f"ExtractFASTActions takes one example's tokens [S], got shape {list(tokens.shape)}")
        actions = self.tokenizer.extract_actions(tokens, self.action_horizon, self.action_dim)
        return {**data, "actions": actions}
