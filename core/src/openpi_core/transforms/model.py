"""Transforms between a robot-neutral data dict and a π0/π0.5 model input."""

from typing import Any

import attrs
import numpy as np

from openpi_core.errors import InputError
from openpi_core.tokenizers import PaligemmaTokenizer


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
