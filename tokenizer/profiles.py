"""Special tokens and the two tokenizer profiles: how text and conversations become token ids.

Every tokenizer this project trains reserves all special tokens below, at fixed ids, so one
tokenizer serves pre-training, SFT and DPO:

| id | token            | role                                                     |
|----|------------------|----------------------------------------------------------|
| 0  | `<|endoftext|>`  | starts every document and conversation (separator + BOS) |
| 1  | `<|pad|>`        | padding                                                  |
| 2  | `<|system|>`     | opens a system turn (post_training_v1)                   |
| 3  | `<|user|>`       | opens a user turn                                        |
| 4  | `<|assistant|>`  | opens an assistant turn; a generation prompt ends here   |
| 5  | `<|end|>`        | closes every turn                                        |

Profiles:
- `pre_training`: a document is `<|endoftext|>` + text.
- `post_training_v1`: `<|endoftext|>` then, per message, `<|role|>` + content + `<|end|>`.
  The loss mask is 1 exactly on assistant content and that turn's `<|end|>`.

Raw text is encoded with special-token matching off: a literal "<|end|>" typed by a user, or
found in a web page, is plain bytes and can never forge a turn boundary.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer

from common.errors import UserError

DOC_SEPARATOR = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [DOC_SEPARATOR, PAD, SYSTEM, USER, ASSISTANT, END_OF_TURN]
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}

PROFILES = ("pre_training", "post_training_v1")

# The same rendering as encode_prompt/encode_conversation, for Hugging Face's
# `tokenizer.apply_chat_template` (shipped by model.export_hf in tokenizer_config.json).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise UserError(f"unknown tokenizer profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


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
            raise UserError(
                f"{path} does not reserve {token} at id {expected_id}; "
                "retrain it with `python3 -m tokenizer.train`"
            )
    tokenizer.encode_special_tokens = True  # raw text never produces special ids
    return tokenizer


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    return {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}


def encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Plain text to ids, no special tokens added or matched."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def encode_document(tokenizer: Tokenizer, text: str) -> list[int]:
    """pre_training profile: `<|endoftext|>` + text."""
    return [SPECIAL_TOKENS.index(DOC_SEPARATOR)] + encode_text(tokenizer, text)


def _check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise UserError("a conversation must be a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLE_TOKENS:
            raise UserError(f"bad message {message!r}: role must be one of {sorted(ROLE_TOKENS)}")
        if not isinstance(message.get("content"), str):
            raise UserError(f"bad message {message!r}: content must be a string")


def encode_conversation(tokenizer: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """post_training_v1: ids and a loss mask that is 1 on assistant content and its `<|end|>`."""
    _check_messages(messages)
    ids = [SPECIAL_TOKENS.index(DOC_SEPARATOR)]
    mask = [0]
    end_id = SPECIAL_TOKENS.index(END_OF_TURN)
    for message in messages:
        content = encode_text(tokenizer, message["content"])
        trained = 1 if message["role"] == "assistant" else 0
        ids += [SPECIAL_TOKENS.index(ROLE_TOKENS[message["role"]])] + content + [end_id]
        mask += [0] + [trained] * (len(content) + 1)
    return ids, mask


def encode_prompt(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """post_training_v1 generation prompt: the conversation so far, then `<|assistant|>`."""
    ids, _ = encode_conversation(tokenizer, messages)
    return ids + [SPECIAL_TOKENS.index(ASSISTANT)]


def encode_response(tokenizer: Tokenizer, content: str) -> list[int]:
    """An assistant reply that follows a generation prompt: content + `<|end|>` (DPO responses)."""
    return encode_text(tokenizer, content) + [SPECIAL_TOKENS.index(END_OF_TURN)]


def describe(tokenizer: Tokenizer) -> str:
    """One line listing the special tokens and their ids, for logs."""
    return json.dumps(special_token_ids(tokenizer))
