"""Show token ids as text with visible boundaries, byte-exact (used by inspect_tokenized_data).

A byte-level BPE token is a run of bytes that may end in the middle of a UTF-8 character, so
`tokenizer.decode([id])` would hide it behind a replacement character. Here each token is turned
back into its exact bytes through the byte-level alphabet, and bytes that are not valid UTF-8 on
their own are shown as `\\xNN`.
"""

from tokenizers import Tokenizer

from tokenizer.encoding import SPECIAL_TOKENS

RESET = "\033[0m"
BACKGROUNDS = ("\033[48;5;236m", "\033[48;5;239m")  # alternate, so boundaries show
TRAINED = "\033[1;32m"  # bold green: tokens with loss mask 1
SPECIAL = "\033[35m"  # magenta: special tokens


def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's `bytes_to_unicode`, the alphabet of the ByteLevel pre-tokenizer."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shifted)
            shifted += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


class TokenBytes:
    """Maps token ids to their exact bytes (special tokens to their UTF-8 names)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.decoder = byte_decoder()
        self.cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        token_id = int(token_id)
        if token_id not in self.cache:
            text = self.tokenizer.id_to_token(token_id)
            if text is None:
                self.cache[token_id] = f"<unknown id {token_id}>".encode()
            elif token_id < len(SPECIAL_TOKENS):
                self.cache[token_id] = text.encode()
            else:
                self.cache[token_id] = bytes(self.decoder[char] for char in text)
        return self.cache[token_id]

    def join(self, ids) -> bytes:
        return b"".join(self(token_id) for token_id in ids)


def visible(piece: bytes) -> str:
    """Bytes as readable text: invalid UTF-8 as \\xNN, newlines and tabs as \\n and \\t."""
    text = piece.decode("utf-8", errors="backslashreplace")
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def render_tokens(token_bytes: TokenBytes, ids, mask=None, color: bool = False) -> str:
    """One line of tokens. Plain: `[tok]`, and `{tok}` where the loss mask is 1.
    Color: alternating backgrounds, trained tokens bold green, special tokens magenta."""
    out = []
    for position, token_id in enumerate(ids):
        text = visible(token_bytes(token_id))
        trained = mask is not None and mask[position]
        if color:
            style = BACKGROUNDS[position % 2]
            style += TRAINED if trained else SPECIAL if token_id < len(SPECIAL_TOKENS) else ""
            out.append(f"{style}{text}{RESET}")
        else:
            out.append(f"{{{text}}}" if trained else f"[{text}]")
    return "".join(out)
