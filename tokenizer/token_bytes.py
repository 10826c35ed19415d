"""The exact bytes behind each token id: what bits per byte divides by, and what the viewer shows.

Bits per byte (bpb) is a loss in bits over the byte length of the text predicted; it does not
depend on the vocabulary, so runs with different tokenizers compare on it. A byte-level BPE
writes every byte as one character of GPT-2's `bytes_to_unicode` alphabet, so a token's bytes
are its characters mapped back (a token may end inside a UTF-8 character, which
`tokenizer.decode([id])` would hide). Added tokens (`<|endoftext|>`, `<|end|>`, ...) are no text.
"""

import numpy as np


def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's `bytes_to_unicode`, the alphabet of the ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [byte for byte in range(256) if byte not in printable]
    codes = printable + [256 + shift for shift in range(len(others))]
    return {chr(code): byte for byte, code in zip(printable + others, codes)}


def token_bytes(tokenizer) -> list[bytes | None]:
    """[vocab_size] the bytes of each token id's text; None for added tokens. `tokenizer` is a
    tokenizers.Tokenizer or a ChatTokenizer."""
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    decoder = byte_decoder()
    table = [None] * tokenizer.get_vocab_size()
    for token, token_id in tokenizer.get_vocab(with_added_tokens=True).items():
        if token in added:
            continue
        if all(char in decoder for char in token):
            table[token_id] = bytes(decoder[char] for char in token)
        else:  # not a byte-level vocabulary: the token's text as UTF-8
            table[token_id] = token.encode()
    return table


def token_byte_lengths(tokenizer) -> np.ndarray:
    """[vocab_size] int64: UTF-8 bytes of text behind each token id (0 for added tokens)."""
    lengths = [0 if text is None else len(text) for text in token_bytes(tokenizer)]
    return np.array(lengths, np.int64)
