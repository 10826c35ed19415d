"""How many bytes of UTF-8 text each token id stands for: what bits per byte divides by.

Bits per byte (bpb) is a model's loss in bits over the byte length of the text it predicts. It
does not depend on the vocabulary, so runs with different tokenizers (or other projects'
published results) compare on it, where a loss per token does not.

The project's tokenizers are byte-level BPE: every byte maps to one character of a token's
string, so a regular token's length in characters is its length in bytes. Special tokens
(`<|endoftext|>`, `<|end|>`, ...) stand for no text: 0 bytes.
"""

import numpy as np
from tokenizers import Tokenizer


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """[vocab_size] int64: UTF-8 bytes of text behind each token id (0 for special tokens)."""
    special = {added.content for added in tokenizer.get_added_tokens_decoder().values()}
    lengths = np.zeros(tokenizer.get_vocab_size(), np.int64)
    for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        lengths[token_id] = 0 if token in special else len(token)
    return lengths
