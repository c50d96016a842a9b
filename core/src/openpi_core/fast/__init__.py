"""π0-FAST tokenization: the FAST action tokenizer and openpi's π0-FAST prompt format.

:class:`FASTActionTokenizer` turns action chunks into FAST tokens and back;
:class:`FASTPromptTokenizer` writes them, with the prompt and the binned state, into
the PaliGemma token sequence π0-FAST is trained on, and reads actions back out of
what the model generated.
"""

from openpi_core.fast.action_tokenizer import FAST_TOKENIZER_URL, FASTActionTokenizer, dct_matrix
from openpi_core.fast.prompt import FAST_SKIP_TOKENS, FASTPromptTokenizer

__all__ = ["FAST_SKIP_TOKENS", "FAST_TOKENIZER_URL", "FASTActionTokenizer", "FASTPromptTokenizer", "dct_matrix"]
