"""The PaliGemma prompt tokenizer (SentencePiece), with openpi's π0 and π0.5 prompt formats.

The SentencePiece model is fetched once from :data:`PALIGEMMA_TOKENIZER_URL` into the
download cache (see :mod:`openpi_core.download`); pass ``model_path`` to use a local
copy or another model.
"""

import logging
import threading
from pathlib import Path

import numpy as np
import sentencepiece

from openpi_core.download import maybe_download
from openpi_core.errors import InputError

logger = logging.getLogger(__name__)

PALIGEMMA_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"
STATE_BINS = 256
"""π0.5 writes each normalized state value in [-1, 1] into the prompt as one of 256 bins."""


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Bin indices ``0..255`` of a normalized state ``[S]`` (values outside [-1, 1] clip to the ends)."""
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.clip(np.digitize(state, bins=edges) - 1, 0, STATE_BINS - 1)


NORMALIZER_SPEC_FIELD = 3
"""Field number of ``normalizer_spec`` in SentencePiece's ``ModelProto`` (after the pieces, 1,
and the trainer spec, 2); every trained model has one."""


def _top_level_fields(data: bytes) -> set[int] | None:
    """Field numbers of a serialized protobuf message's top-level fields; None when malformed."""

    def varint(position: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            if position >= len(data) or shift > 63:
                raise IndexError
            byte = data[position]
            value |= (byte & 0x7F) << shift
            position, shift = position + 1, shift + 7
            if not byte & 0x80:
                return value, position

    fields, position = set(), 0
    try:
        while position < len(data):
            tag, position = varint(position)
            wire_type = tag & 7
            if wire_type == 0:
                _, position = varint(position)
            elif wire_type == 2:
                length, position = varint(position)
                position += length
            elif wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
            else:
                return None
            fields.add(tag >> 3)
    except IndexError:
        return None
    return fields if position == len(data) else None


def load_sentencepiece(path: Path) -> sentencepiece.SentencePieceProcessor:
    """The SentencePiece model in the file ``path``.

    A file cut short exactly between two pieces still parses, as a model with fewer
    pieces; it is recognised by its missing ``normalizer_spec``, which follows them.

    Raises:
        InputError: the file cannot be read, or is not a SentencePiece model (truncated
            or corrupt); the message names it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read the SentencePiece tokenizer {path}: {error}") from error
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=data)
    except (RuntimeError, OSError, ValueError) as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(
            f"{path} is not a valid SentencePiece tokenizer model ({len(data)} bytes; truncated or corrupt?): {detail}"
        ) from error
    if processor.vocab_size() == 0:
        raise InputError(f"{path} is not a valid SentencePiece tokenizer model: it holds no pieces ({len(data)} bytes)")
    fields = _top_level_fields(data)
    if fields is None or NORMALIZER_SPEC_FIELD not in fields:
        raise InputError(
            f"{path} is not a valid SentencePiece tokenizer model ({len(data)} bytes; truncated?): it ends "
            f"after {processor.vocab_size()} pieces without the normalizer spec that follows them"
        )
    return processor


def clean_prompt(prompt: str) -> str:
    return prompt.strip().replace("_", " ").replace("\n", " ")


class PaligemmaTokenizer:
    """Turns a prompt (and, for π0.5, the state) into ``max_len`` token ids and a mask.

    π0: ``<bos> prompt`` followed by the tokens of ``"\\n"``, which mark the start of
    the answer. π0.5 with a discrete state: ``<bos> "Task: {prompt}, State: {bins};\\nAction: "``.
    Longer sequences are truncated with a warning; shorter ones are padded with id 0.
    """

    def __init__(self, max_len: int, model_path: str | Path = PALIGEMMA_TOKENIZER_URL) -> None:
        self.max_len = max_len
        self.model_path = model_path
        self._processor: sentencepiece.SentencePieceProcessor | None = None
        self._lock = threading.Lock()

    @property
    def processor(self) -> sentencepiece.SentencePieceProcessor:
        with self._lock:
            if self._processor is None:
                self._processor = load_sentencepiece(maybe_download(str(self.model_path)))
            return self._processor

    def tokenize(self, prompt: str, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids int32 ``[max_len]`` and their mask bool ``[max_len]``."""
        text = clean_prompt(prompt)
        if state is not None:
            bins = " ".join(str(b) for b in discretize_state(np.asarray(state)))
            tokens = self.processor.encode(f"Task: {text}, State: {bins};\nAction: ", add_bos=True)
        else:
            tokens = self.processor.encode(text, add_bos=True) + self.processor.encode("\n")
        if len(tokens) > self.max_len:
            logger.warning(
                "prompt is %d tokens, more than max_token_len %d: truncating; raise max_token_len in the model config",
                len(tokens),
                self.max_len,
            )
            tokens = tokens[: self.max_len]
        ids = np.zeros(self.max_len, np.int32)
        ids[: len(tokens)] = tokens
        return ids, np.arange(self.max_len) < len(tokens)
