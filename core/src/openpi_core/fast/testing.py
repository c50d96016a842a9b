"""A small SentencePiece model shaped like PaliGemma's where π0-FAST relies on it, for tests.

Like PaliGemma's: pad 0, eos 1, bos 2, unk 3, no dummy prefix, whitespace kept, and
``<locNNNN>`` pieces at the tail of the vocabulary that FAST tokens map onto. With
:func:`fast_skip_tokens` as ``Pi0FASTConfig.fast_skip_tokens``, FAST token ``t`` lands
on ``<loc{locs - 1 - t}>``, as on PaliGemma's real tail.
"""

from collections.abc import Sequence
from pathlib import Path

import sentencepiece

EXTRA_PIECES = 60
"""Room for the ordinary pieces learned from the corpus."""


def train_fast_test_tokenizer(
    directory: str | Path, corpus: Sequence[str], *, locs: int, symbols: Sequence[str] = ()
) -> Path:
    """Train the model on ``corpus`` (lines of text) into ``<directory>/tokenizer.model``.

    Args:
        locs: how many ``<locNNNN>`` pieces (at least the FAST vocabulary size).
        symbols: extra pieces kept whole (state bins ``"0"`` … ``"255"``, say).

    Returns:
        The model file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text("\n".join(corpus))
    pieces = ["\n", *symbols, *(f"<loc{i:04d}>" for i in range(locs))]
    sentencepiece.SentencePieceTrainer.train(
        input=str(directory / "corpus.txt"),
        model_prefix=str(directory / "tokenizer"),
        vocab_size=4 + len(pieces) + EXTRA_PIECES,
        user_defined_symbols=pieces,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return directory / "tokenizer.model"


def fast_skip_tokens(model_file: str | Path, locs: int) -> int:
    """The ``fast_skip_tokens`` that puts FAST token 0 on the last ``<loc>`` piece."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    return processor.vocab_size() - 1 - processor.piece_to_id(f"<loc{locs - 1:04d}>")
