"""The FAST action tokenizer: DCT over time, scale and round, then byte-level BPE.

An action chunk ``[H, A]`` becomes its orthonormal DCT-II along the time axis,
multiplied by ``scale`` and rounded to integers. The coefficients are read in
row-major order (all dimensions of frequency 0, then of frequency 1, …), so the
near-zero high frequencies form long runs at the end. Each integer, shifted by
``-min_token`` (clipped at 0), becomes one Unicode character, and a byte-level BPE
compresses the string into token ids. Decoding inverts each step; the rounding
leaves every DCT coefficient within ``0.5 / scale`` of the original.

Files are those of the published ``physical-intelligence/fast`` tokenizer:
``processor_config.json`` (``scale``, ``vocab_size``, ``min_token``,
``time_horizon``, ``action_dim``, ``processor_class``, ``auto_map``) and the BPE's
``tokenizer.json`` (``tokenizer_config.json`` and ``special_tokens_map.json`` are
written too, for ``transformers``). A directory downloaded from the Hub loads with
:meth:`FASTActionTokenizer.load`, and one written by :meth:`FASTActionTokenizer.save`
loads with ``transformers.AutoProcessor`` once the published
``processing_action_tokenizer.py`` is placed beside it.

Needs the ``tokenizers`` package (``pip install 'openpi-core[fast]'``), imported on
first use.
"""

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openpi_core.download import is_url, maybe_download
from openpi_core.errors import InputError

logger = logging.getLogger(__name__)

FAST_TOKENIZER_URL = "hf://physical-intelligence/fast"
"""The published universal FAST tokenizer (vocabulary 2048, scale 10)."""
PROCESSOR_CONFIG = "processor_config.json"
BPE_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
PROCESSOR_CLASS = "UniversalActionProcessor"
AUTO_MAP = {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"}
TRANSFORMERS_UNLIMITED_LENGTH = int(1e30)
"""What ``transformers`` writes as ``model_max_length`` for a tokenizer without a limit."""
MAX_CHAR = 0xD800
"""Shifted coefficients must stay below the UTF-16 surrogates to be encodable text."""


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as error:
        raise InputError("the FAST tokenizer needs the tokenizers package: pip install 'openpi-core[fast]'") from error
    return tokenizers


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``[n, n]`` (float64): ``coefficients = M @ signal``,
    ``signal = M.T @ coefficients``; the same transform as ``scipy.fft.dct(norm="ortho")``."""
    k = np.arange(n)[:, None]
    t = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * t + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def _quantize(chunk: np.ndarray, scale: float) -> np.ndarray:
    """Rounded, scaled DCT coefficients ``[H, A]`` (int64) of one chunk ``[H, A]``."""
    return np.around(dct_matrix(chunk.shape[0]) @ chunk.astype(np.float64) * scale).astype(np.int64)


def _to_text(coefficients: np.ndarray, min_token: int) -> str:
    shifted = np.maximum(coefficients.reshape(-1) - min_token, 0)
    if shifted.size and shifted.max() >= MAX_CHAR:
        raise InputError(
            f"a scaled DCT coefficient is {int(shifted.max()) + min_token}, beyond what the FAST tokenizer "
            f"can write (below {MAX_CHAR + min_token}); are the actions normalized?"
        )
    return "".join(map(chr, shifted.tolist()))


class FASTActionTokenizer:
    """Action chunks to FAST token ids and back (``B`` batch, ``H`` horizon, ``A`` action dim).

    Args:
        bpe: a ``tokenizers.Tokenizer`` (byte-level BPE over coefficient characters).
        scale: DCT coefficients are multiplied by this before rounding.
        vocab_size: the BPE vocabulary size the tokenizer was fit with.
        min_token: the smallest rounded coefficient, written as character 0.
        time_horizon, action_dim: the chunk shape :meth:`decode` assumes when not told.
    """

    def __init__(
        self,
        bpe: Any,
        *,
        scale: float = 10.0,
        vocab_size: int = 1024,
        min_token: int = 0,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> None:
        self.bpe = bpe
        self.scale = scale
        self.vocab_size = vocab_size
        self.min_token = min_token
        self.time_horizon = time_horizon
        self.action_dim = action_dim

    def __repr__(self) -> str:
        return (
            f"FASTActionTokenizer(scale={self.scale}, vocab_size={self.vocab_size}, min_token={self.min_token}, "
            f"time_horizon={self.time_horizon}, action_dim={self.action_dim})"
        )

    def encode(self, actions: np.ndarray) -> list[int] | list[list[int]]:
        """Token ids of one chunk ``[H, A]`` (a list of ints) or of a batch ``[B, H, A]``
        (a list of lists; their lengths differ).

        Raises:
            InputError: ``actions`` is not 2- or 3-dimensional, holds NaN or inf, or a
                coefficient is too large to encode.
        """
        actions = np.asarray(actions)
        if actions.ndim not in (2, 3):
            raise InputError(f"actions should be [H, A] or [B, H, A], got shape {list(actions.shape)}")
        if not np.all(np.isfinite(actions)):
            raise InputError("actions hold NaN or inf; the FAST tokenizer encodes finite values only")
        batch = actions if actions.ndim == 3 else actions[None]
        tokens = [self.bpe.encode(_to_text(_quantize(chunk, self.scale), self.min_token)).ids for chunk in batch]
        return tokens if actions.ndim == 3 else tokens[0]

    def decode(
        self, tokens: Sequence[Sequence[int]], time_horizon: int | None = None, action_dim: int | None = None
    ) -> np.ndarray:
        """Action chunks float32 ``[B, H, A]`` of a batch of token sequences.

        A sequence that does not decode to exactly ``H * A`` coefficients (a model that
        stopped early or wrote tokens that are not FAST's) gives a chunk of zeros and a
        logged warning; decoding never raises on the tokens.

        Args:
            time_horizon, action_dim: default to the ones the tokenizer was made with.

        Raises:
            InputError: neither the call nor the tokenizer says ``H`` and ``A``.
        """
        horizon = time_horizon or self.time_horizon
        dim = action_dim or self.action_dim
        if horizon is None or dim is None:
            raise InputError(
                f"FAST decoding needs the chunk shape: pass time_horizon and action_dim "
                f"(got time_horizon={horizon}, action_dim={dim})"
            )
        inverse = dct_matrix(horizon).T
        chunks = np.zeros((len(tokens), horizon, dim), np.float32)
        for row, sequence in enumerate(tokens):
            coefficients = self._coefficients(sequence, horizon * dim)
            if coefficients is not None:
                chunks[row] = inverse @ (coefficients.reshape(horizon, dim) / self.scale)
        return chunks

    def _coefficients(self, sequence: Sequence[int], count: int) -> np.ndarray | None:
        """The ``count`` integer coefficients ``sequence`` decodes to, else None (logged)."""
        try:
            text = self.bpe.decode([int(token) for token in sequence])
        except (OverflowError, TypeError, ValueError) as error:
            logger.warning("FAST tokens %s do not decode (%s); returning zero actions", list(sequence), error)
            return None
        if len(text) != count:
            logger.warning(
                "FAST tokens decode to %d coefficients, expected %d (horizon x action dim); returning zero actions",
                len(text),
                count,
            )
            return None
        return np.fromiter(map(ord, text), np.int64, count) + self.min_token

    @classmethod
    def fit(
        cls,
        action_chunks: Iterable[np.ndarray],
        vocab_size: int = 1024,
        scale: float = 10.0,
        *,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> "FASTActionTokenizer":
        """Train a tokenizer on normalized action chunks, each ``[H, A]``.

        ``min_token`` is the smallest rounded coefficient seen. The BPE's initial alphabet
        is every byte, so coefficients never seen in training still encode.

        Raises:
            InputError: no chunks, a chunk that is not 2-dimensional, or a coefficient
                range wider than ``vocab_size``.
        """
        tokenizers = _tokenizers()
        quantized = []
        for chunk in action_chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 2 or not np.all(np.isfinite(chunk)):
                raise InputError(f"each action chunk should be a finite [H, A] array, got shape {list(chunk.shape)}")
            quantized.append(_quantize(chunk, scale))
        if not quantized:
            raise InputError("FAST fit needs at least one action chunk")
        low = int(min(q.min() for q in quantized))
        high = int(max(q.max() for q in quantized))
        if high - low > vocab_size:
            raise InputError(
                f"the rounded coefficients span {high - low} values ({low}..{high}), more than vocab_size="
                f"{vocab_size}; raise vocab_size or lower scale"
            )
        bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
        bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = tokenizers.decoders.ByteLevel()
        bpe.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            max_token_length=10_000,
        )
        bpe.train_from_iterator((_to_text(q, low) for q in quantized), trainer=trainer)
        return cls(
            bpe, scale=scale, vocab_size=vocab_size, min_token=low, time_horizon=time_horizon, action_dim=action_dim
        )

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the published tokenizer's files into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        scale = int(self.scale) if float(self.scale).is_integer() else self.scale
        config = {
            "action_dim": self.action_dim,
            "auto_map": AUTO_MAP,
            "min_token": self.min_token,
            "processor_class": PROCESSOR_CLASS,
            "scale": scale,
            "time_horizon": self.time_horizon,
            "vocab_size": self.vocab_size,
        }
        tokenizer_config = {
            "added_tokens_decoder": {},
            "clean_up_tokenization_spaces": False,
            "model_max_length": TRANSFORMERS_UNLIMITED_LENGTH,
            "processor_class": PROCESSOR_CLASS,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        (directory / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        (directory / SPECIAL_TOKENS_MAP).write_text("{}\n")
        self.bpe.save(str(directory / BPE_FILE))
        return directory

    @classmethod
    def load(cls, source: str | os.PathLike[str] = FAST_TOKENIZER_URL) -> "FASTActionTokenizer":
        """Read a tokenizer directory: a local path, or a URL whose files are fetched into
        the download cache (``hf://physical-intelligence/fast`` by default).

        Raises:
            InputError: ``processor_config.json`` or ``tokenizer.json`` is missing or malformed.
            DownloadError: a URL's file cannot be fetched.
        """
        source = os.fspath(source)
        if is_url(source):
            files = {name: maybe_download(f"{source.rstrip('/')}/{name}") for name in (PROCESSOR_CONFIG, BPE_FILE)}
        else:
            files = {name: Path(source) / name for name in (PROCESSOR_CONFIG, BPE_FILE)}
        for name, path in files.items():
            if not path.is_file():
                raise InputError(f"FAST tokenizer {source} should contain {name}; {path} is not a file")
        tokenizers = _tokenizers()
        try:
            config = json.loads(files[PROCESSOR_CONFIG].read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{files[PROCESSOR_CONFIG]} is not valid JSON: {error}") from error
        if not isinstance(config, dict):
            raise InputError(f"{files[PROCESSOR_CONFIG]} should hold a JSON object, got {type(config).__name__}")
        try:
            bpe = tokenizers.Tokenizer.from_file(str(files[BPE_FILE]))
        except Exception as error:  # tokenizers raises a bare Exception for a malformed file
            raise InputError(f"{files[BPE_FILE]} is not a tokenizers file: {error}") from error
        return cls(
            bpe,
            scale=config.get("scale", 10.0),
            vocab_size=config.get("vocab_size", bpe.get_vocab_size()),
            min_token=int(config.get("min_token", 0)),
            time_horizon=config.get("time_horizon"),
            action_dim=config.get("action_dim"),
        )
