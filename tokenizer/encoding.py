"""Special tokens and the chat format: how documents and conversations become token ids.

Every tokenizer this project trains reserves all special tokens below, at fixed ids:

| id | token            | role                                                     |
|----|------------------|----------------------------------------------------------|
| 0  | `<|endoftext|>`  | starts every document and conversation (separator + BOS) |
| 1  | `<|pad|>`        | padding                                                  |
| 2  | `<|system|>`     | opens a system turn                                      |
| 3  | `<|user|>`       | opens a user turn                                        |
| 4  | `<|assistant|>`  | opens an assistant turn; a generation prompt ends here   |
| 5  | `<|end|>`        | closes every turn                                        |

A document is `<|endoftext|>` + text; a conversation is `<|endoftext|>` then `<|role|>` content
`<|end|>` per message (the SFT loss mask: 1 on assistant content and its `<|end|>`). The format
is written once, in `chat_pieces`; every encoder, the inspector and the Jinja `CHAT_TEMPLATE` of
exported models follow it. Raw text is encoded with special-token matching off: a literal
"<|end|>" in a user's text is plain bytes and can never forge a turn boundary.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer

from common.errors import UserError

DOC_SEPARATOR = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [DOC_SEPARATOR, PAD, SYSTEM, USER, ASSISTANT, END_OF_TURN]
SPECIAL_IDS = {token: token_id for token_id, token in enumerate(SPECIAL_TOKENS)}
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

# The fixed ids, by name (every tokenizer.train tokenizer has them; load_tokenizer checks).
BOS_ID = SPECIAL_IDS[DOC_SEPARATOR]  # starts every document and conversation
PAD_ID = SPECIAL_IDS[PAD]
ASSISTANT_ID = SPECIAL_IDS[ASSISTANT]
END_OF_TURN_ID = SPECIAL_IDS[END_OF_TURN]
STOP_IDS = (END_OF_TURN_ID, BOS_ID)  # a reply ends with <|end|>, a document with <|endoftext|>

# `chat_pieces` for Hugging Face's `tokenizer.apply_chat_template` (shipped by model.export.hf
# in tokenizer_config.json); tests check it renders the same text.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class Piece(NamedTuple):
    """One piece of a rendered conversation."""

    text: str  # a special token, or a message's content
    special: bool
    trained: bool  # an SFT target: assistant content and the <|end|> that closes it


def chat_pieces(messages: list[dict], add_generation_prompt: bool = False) -> list[Piece]:
    """The chat format: `<|endoftext|>`, then `<|role|>` content `<|end|>` per message, then
    `<|assistant|>` when the model is to answer next. The one place the format is written."""
    pieces = [_START]
    for message in messages:
        trained = message["role"] == "assistant"
        pieces += (_OPEN[message["role"]], Piece(message["content"], False, trained), _END[trained])
    if add_generation_prompt:
        pieces.append(_OPEN["assistant"])
    return pieces


def response_pieces(content: str) -> list[Piece]:
    """An assistant reply that follows a generation prompt (how a DPO response is stored)."""
    return [Piece(content, False, True), _END[True]]


# The special pieces, made once (tokenizing a corpus renders millions of conversations).
_START = Piece(DOC_SEPARATOR, True, False)
_OPEN = {role: Piece(token, True, False) for role, token in ROLE_TOKENS.items()}
_END = {trained: Piece(END_OF_TURN, True, trained) for trained in (False, True)}


def render_text(pieces: list[Piece]) -> str:
    """The pieces as text: what their token ids decode to."""
    return "".join(piece.text for piece in pieces)


def content_texts(pieces: list[Piece]) -> list[str]:
    """The texts to encode, in order (special tokens are ids, not text)."""
    return [piece.text for piece in pieces if not piece.special]


def pieces_to_ids(pieces: list[Piece], content_ids: Iterator[list[int]]) -> tuple[list, list]:
    """(ids, loss mask) of the pieces; `content_ids` yields the encoding of each content piece
    in order, so a caller may encode the contents of many conversations in one batch."""
    ids, mask = [], []
    for text, special, trained in pieces:
        if special:
            ids.append(SPECIAL_IDS[text])
            mask.append(1 if trained else 0)
        else:
            content = next(content_ids)
            ids += content
            mask += [1 if trained else 0] * len(content)
    return ids, mask


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json trained by `tokenizer.train`, or raise a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"tokenizer file {path} not found; train one with `python3 -m tokenizer.train`"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exception subclasses with long messages
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path} is not a Hugging Face tokenizer.json ({first_line})") from None
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != expected_id:
            raise UserError(f"{path} does not reserve {token} at id {expected_id}; "
                            "retrain it with `python3 -m tokenizer.train`")  # fmt: skip
    tokenizer.encode_special_tokens = True  # raw text never produces special ids
    return tokenizer


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Plain text to ids, no special tokens added or matched."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def encode_pieces(tokenizer: Tokenizer, pieces: list[Piece]) -> tuple[list[int], list[int]]:
    texts = content_texts(pieces)
    return pieces_to_ids(pieces, (encode_text(tokenizer, text) for text in texts))


def encode_document(tokenizer: Tokenizer, text: str) -> list[int]:
    """A pre-training document: `<|endoftext|>` + text."""
    return [BOS_ID] + encode_text(tokenizer, text)


def _check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise UserError("a conversation must be a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLE_TOKENS:
            raise UserError(f"bad message {message!r}: role must be one of {sorted(ROLE_TOKENS)}")
        if not isinstance(message.get("content"), str):
            raise UserError(f"bad message {message!r}: content must be a string")


def encode_conversation(tokenizer: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """A conversation: ids and a loss mask that is 1 on assistant content and its `<|end|>`."""
    _check_messages(messages)
    return encode_pieces(tokenizer, chat_pieces(messages))


def encode_prompt(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """A generation prompt: the conversation so far, then `<|assistant|>`."""
    _check_messages(messages)
    return encode_pieces(tokenizer, chat_pieces(messages, add_generation_prompt=True))[0]


def encode_response(tokenizer: Tokenizer, content: str) -> list[int]:
    """An assistant reply that follows a generation prompt: content + `<|end|>` (DPO responses)."""
    return encode_pieces(tokenizer, response_pieces(content))[0]


def describe(tokenizer: Tokenizer) -> str:
    """One line listing the special tokens and their ids, for logs."""
    return json.dumps(special_token_ids(tokenizer))
