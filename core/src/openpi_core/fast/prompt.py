"""openpi's π0-FAST token sequence: prompt and binned state, then FAST action tokens.

The sequence is ``prefix + postfix``, padded with id 0 (or truncated) to ``max_len``:

* prefix: ``<bos> "Task: {prompt}, State: {bins};\\n"`` with the prompt lowercased and
  ``_`` written as a space, and each normalized state value as one of 256 bins;
* postfix (training only, when actions are given): the tokens of ``"Action: "``, the
  FAST tokens of the action chunk mapped into the PaliGemma vocabulary, the tokens
  of ``"|"`` and ``<eos>``.

FAST token ``t`` becomes PaliGemma id ``vocab - 1 - fast_skip_tokens - t``: the FAST
vocabulary runs downwards from just below the last ``fast_skip_tokens`` (special) ids.
The mapping is its own inverse. The autoregressive flags are 0 on the prefix (it attends
bidirectionally) and 1 on the postfix (causal); the loss covers the postfix only.
"""

import logging
import os
import threading

import numpy as np

from openpi_core.fast.action_tokenizer import FAST_TOKENIZER_URL, FASTActionTokenizer
from openpi_core.tokenizers import PaligemmaTokenizer, discretize_state

logger = logging.getLogger(__name__)

FAST_SKIP_TOKENS = 128
"""PaliGemma's last 128 ids are special tokens that FAST tokens stay clear of."""
ACTION_START = "Action: "
ACTION_END = "|"


class FASTPromptTokenizer:
    """Builds π0-FAST's token sequence and extracts actions from generated tokens.

    Args:
        max_len: the sequence length (``Pi0FASTConfig.max_token_len``).
        paligemma: the PaliGemma SentencePiece tokenizer (its own ``max_len`` is unused);
            None takes the default one.
        action_tokenizer: a :class:`FASTActionTokenizer`, or where to load one from (a
            directory or URL, read on first use).
        fast_skip_tokens: how many ids at the end of the PaliGemma vocabulary to skip.
    """

    def __init__(
        self,
        max_len: int,
        paligemma: PaligemmaTokenizer | None = None,
        action_tokenizer: FASTActionTokenizer | str | os.PathLike[str] = FAST_TOKENIZER_URL,
        fast_skip_tokens: int = FAST_SKIP_TOKENS,
    ) -> None:
        self.max_len = max_len
        self.paligemma = paligemma or PaligemmaTokenizer(max_len)
        self.fast_skip_tokens = fast_skip_tokens
        self._action_tokenizer = action_tokenizer
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"FASTPromptTokenizer(max_len={self.max_len}, paligemma={self.paligemma.model_path!s}, "
            f"action_tokenizer={self._action_tokenizer!s}, fast_skip_tokens={self.fast_skip_tokens})"
        )

    @property
    def action_tokenizer_source(self) -> FASTActionTokenizer | str | os.PathLike[str]:
        """The action tokenizer, or where it will be loaded from on first use."""
        return self._action_tokenizer

    @property
    def action_tokenizer(self) -> FASTActionTokenizer:
        with self._lock:
            if not isinstance(self._action_tokenizer, FASTActionTokenizer):
                self._action_tokenizer = FASTActionTokenizer.load(self._action_tokenizer)
            return self._action_tokenizer

    def to_paligemma(self, tokens: np.ndarray | list[int]) -> np.ndarray:
        """FAST token ids -> PaliGemma ids, and (the same map) back."""
        return self.paligemma.processor.vocab_size() - 1 - self.fast_skip_tokens - np.asarray(tokens, np.int64)

    def tokenize(
        self, prompt: str, state: np.ndarray, actions: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sequence for ``prompt``, normalized ``state`` ``[S]`` and, for training,
        normalized ``actions`` ``[H, A]``.

        Returns:
            ``(tokens int32, mask bool, ar_mask int32, loss_mask bool)``, each ``[max_len]``.
            Sequences longer than ``max_len`` are truncated with a warning.
        """
        processor = self.paligemma.processor
        text = prompt.lower().strip().replace("_", " ")
        bins = " ".join(str(b) for b in discretize_state(np.asarray(state)))
        prefix = processor.encode(f"Task: {text}, State: {bins};\n", add_bos=True)
        postfix: list[int] = []
        if actions is not None:
            fast = self.action_tokenizer.encode(np.asarray(actions))
            postfix = (
                processor.encode(ACTION_START)
                + self.to_paligemma(fast).tolist()
                + processor.encode(ACTION_END, add_eos=True)
            )
        tokens = prefix + postfix
        ar_mask = [0] * len(prefix) + [1] * len(postfix)
        loss_mask = [False] * len(prefix) + [True] * len(postfix)
        if len(tokens) > self.max_len:
            logger.warning(
                "the π0-FAST sequence is %d tokens, more than max_token_len %d: truncating; raise max_token_len",
                len(tokens),
                self.max_len,
            )
        length = min(len(tokens), self.max_len)

        def pad(values: list[int] | list[bool], dtype: type) -> np.ndarray:
            padded = np.zeros(self.max_len, dtype)
            padded[:length] = values[:length]
            return padded

        return pad(tokens, np.int32), pad([True] * length, bool), pad(ar_mask, np.int32), pad(loss_mask, bool)

    def extract_actions(self, tokens: np.ndarray, action_horizon: int, action_dim: int) -> np.ndarray:
        """The action chunk float32 ``[H, A]`` written in generated ``tokens`` ``[S]``.

        The tokens are decoded to text; the FAST tokens are those between ``"Action: "``
        and the next ``"|"``. Zeros (with a logged warning) when there is no
        ``"Action: "`` or the tokens between do not decode to a full chunk.
        """
        processor = self.paligemma.processor
        text = processor.decode(np.asarray(tokens).astype(np.int64).tolist())
        if ACTION_START not in text:
            logger.warning("generated tokens hold no %r; returning zero actions", ACTION_START)
            return np.zeros((action_horizon, action_dim), np.float32)
        written = text.split(ACTION_START)[1].split(ACTION_END)[0].strip()
        fast = self.to_paligemma(processor.encode(written))
        return self.action_tokenizer.decode([fast.tolist()], time_horizon=action_horizon, action_dim=action_dim)[0]
