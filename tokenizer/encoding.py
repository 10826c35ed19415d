"""The tokenizer in use: its special tokens and its chat template, and how documents,
conversations and prompts become token ids. Every step asks this one object.

    tokenizer = load_tokenizer("data/tokenizer/tokenizer.json")
    tokenizer.document("Once upon a time")        # [BOS] + text
    tokenizer.conversation(messages)              # (ids, SFT loss mask: 1 on assistant turns)
    tokenizer.prompt(messages)                    # ids the model answers next
    tokenizer.reply(messages, "Yes.")             # that answer's ids (a DPO response)
    tokenizer.stop_ids                            # ids that end a reply

A tokenizer.json trained by `tokenizer.train` reserves our special tokens at fixed ids and
speaks our chat format, `CHAT_TEMPLATE`:

| id | token            | role                                                     |
|----|------------------|----------------------------------------------------------|
| 0  | `<|endoftext|>`  | starts every document and conversation (separator + BOS) |
| 1  | `<|pad|>`        | padding                                                  |
| 2  | `<|system|>`     | opens a system turn                                      |
| 3  | `<|user|>`       | opens a user turn                                        |
| 4  | `<|assistant|>`  | opens an assistant turn; a generation prompt ends here   |
| 5  | `<|end|>`        | closes every turn                                        |

A tokenizer_config.json beside tokenizer.json (and maybe chat_template.jinja), as transformers
saves them, brings its own special tokens and template. Templates render as transformers'
apply_chat_template does, with a placeholder for each message's content: the template's text is
encoded with special tokens matched, each content with matching off, so a "<|end|>" a user types
can never forge a turn boundary. An assistant turn (SFT's loss mask, a DPO reply) is its content
and the template's text after it up to the first special token it writes there.
"""

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from common.errors import UserError

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
OUR_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|end|>", "pad_token": "<|pad|>"}
ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
CONFIG_FILE, TEMPLATE_FILE = "tokenizer_config.json", "chat_template.jinja"
PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")  # stands for message i's content while rendering


class Piece(NamedTuple):
    """One piece of a rendered conversation."""

    text: str
    content: bool  # a message's content (encoded as plain text), else the template's own text
    trained: bool  # part of an assistant turn: an SFT target


def token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


def compile_template(source: str) -> jinja2.Template:
    """The template in an environment like transformers' own (its chat_template_utils)."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson  # without Jinja's HTML escaping
    env.globals |= {
        "raise_exception": raise_exception,
        "strftime_now": lambda format: datetime.now().strftime(format),
    }
    return env.from_string(source)


def filled(parts: list[str], contents: list[str]) -> str:
    """The rendered text with each placeholder replaced by its content."""
    return "".join(contents[k // 2] if k % 2 else part for k, part in enumerate(parts))


class ChatTokenizer:
    """A tokenizers.Tokenizer (matching special tokens off: raw text stays text) with its
    special tokens and chat template. Its other attributes (decode, get_vocab_size ...) are the
    Tokenizer's own."""

    def __init__(self, tokenizer: Tokenizer, tokens: dict, template: str | None, where: str):
        self.tokenizer, self.where, self.chat_template = tokenizer, where, template
        self.tokens = {name: value for name, value in tokens.items() if value is not None}
        bos, eos, pad = (self.tokens.get(name, "") for name in OUR_TOKENS)
        self.bos_id, self.eos_id = tokenizer.token_to_id(bos), tokenizer.token_to_id(eos)
        pad = tokenizer.token_to_id(pad)
        self.pad_id = next(i for i in (pad, self.eos_id, 0) if i is not None)
        self.special_ids = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self._matching = Tokenizer.from_str(tokenizer.to_str())  # for the template's own text
        self._matching.encode_special_tokens = False
        self._ids: dict[str, list[int]] = {}  # template text -> ids: a handful of strings
        try:
            self._template = compile_template(template) if template else None
        except jinja2.TemplateError as error:
            raise UserError(f"{where}: the chat template is not valid Jinja ({error})") from None
        self.end_of_turn = self._end_of_turn() or self.tokens.get("eos_token")
        turn_end = self.tokenizer.token_to_id(self.end_of_turn or "")
        self.stop_ids = tuple(
            dict.fromkeys(i for i in (turn_end, self.eos_id, self.bos_id) if i is not None)
        )

    def __getattr__(self, name):
        if name.startswith("_") or "tokenizer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def _end_of_turn(self) -> str | None:
        """The first special token the template writes after an assistant's content."""
        mark = "\ue0001\ue001"
        probe = [
            {"role": "user", "content": "\ue0000\ue001"},
            {"role": "assistant", "content": mark},
        ]
        try:
            after = self.render(probe).partition(mark)[2]
        except Exception:  # no template, or one that wants another conversation: eos
            return None
        specials = [
            t.content
            for t in self.tokenizer.get_added_tokens_decoder().values()
            if t.special and t.content in after
        ]
        return min(specials, key=after.index, default=None)

    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids, no special tokens added or matched."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_with_special_tokens(self, text: str) -> list[int]:
        """Text that may hold special tokens (a template's output) to ids."""
        return self._matching.encode(text, add_special_tokens=False).ids

    def document(self, text: str) -> list[int]:
        """A pre-training document: BOS (when the tokenizer has one) + text."""
        bos = [self.bos_id] if self.bos_id is not None else []
        return bos + self.encode_text(text)

    def chat_pieces(self, messages: list[dict], add_generation_prompt=False) -> list[Piece]:
        """The conversation rendered by the chat template, in pieces (module docstring)."""
        check_messages(messages)
        if self._template is None:
            where = Path(self.where).parent / TEMPLATE_FILE
            raise UserError(
                f"{self.where} has no chat template to render a conversation; give one to "
                f"model.import_hf with --chat-template FILE, or write it to {where}"
            )
        marked = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
        parts = PLACEHOLDER.split(self.render(marked, add_generation_prompt))  # text, i, text ...
        contents = [messages[int(i)]["content"] for i in parts[1::2]]
        if any(content != content.strip() for content in contents):  # does the template trim?
            real = self.render(messages, add_generation_prompt)
            if real != filled(parts, contents):
                contents = [content.strip() for content in contents]
            if real != filled(parts, contents):
                what = "the chat template changes message contents beyond trimming them"
                raise UserError(f"{self.where}: {what}; we cannot render it piecewise")
        pieces, end, in_turn = [], self.end_of_turn or "", False
        for k, part in enumerate(parts):
            if k % 2:  # message int(part)'s content
                in_turn = messages[int(part)]["role"] == "assistant"
                pieces.append(Piece(contents[k // 2], True, in_turn))
                continue
            found = part.find(end) if in_turn and end else -1  # the turn ends in this text
            cut = found + len(end) if found >= 0 else 0
            if part[:cut]:  # the end of an assistant turn: trained
                pieces.append(Piece(part[:cut], False, True))
            if part[cut:]:
                pieces.append(Piece(part[cut:], False, False))
        return pieces

    def render(self, messages: list[dict], add_generation_prompt=False) -> str:
        """The template's text (apply_chat_template(..., tokenize=False))."""
        try:
            return self._template.render(
                messages=messages,
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.tokens,
            )
        except jinja2.TemplateError as error:
            raise UserError(f"{self.where}: the chat template refused it ({error})") from None

    def pieces_to_ids(self, pieces: list[Piece], content_ids: Iterator[list[int]] | None = None):
        """(ids, loss mask) of the pieces; `content_ids` may yield each content's ids in order
        (encoded in one batch for many conversations)."""
        ids, mask = [], []
        for text, content, trained in pieces:
            if content:
                part = next(content_ids) if content_ids else self.encode_text(text)
            else:
                part = self._ids.get(text) or self._ids.setdefault(
                    text, self.encode_with_special_tokens(text)
                )
            ids += part
            mask += [int(trained)] * len(part)
        return ids, mask

    def conversation(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """A conversation: ids and a loss mask that is 1 on the assistant turns."""
        return self.pieces_to_ids(self.chat_pieces(messages))

    def prompt(self, messages: list[dict]) -> list[int]:
        """A generation prompt: the conversation so far, then what opens the assistant's turn."""
        return self.pieces_to_ids(self.chat_pieces(messages, add_generation_prompt=True))[0]

    def reply_pieces(self, messages: list[dict], content: str) -> list[Piece]:
        """The assistant turn that answers `messages` (prompt(messages) comes before it)."""
        pieces = self.chat_pieces([*messages, {"role": "assistant", "content": content}])
        last = max(k for k, piece in enumerate(pieces) if piece.content)
        return [piece for piece in pieces[last:] if piece.trained]

    def reply(self, messages: list[dict], content: str) -> list[int]:
        return self.pieces_to_ids(self.reply_pieces(messages, content))[0]


def check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise UserError("a conversation must be a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise UserError(f"bad message {message!r}: role must be one of {list(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise UserError(f"bad message {message!r}: content must be a string")


def load_tokenizer(path: str | Path) -> ChatTokenizer:
    """A tokenizer.json with what describes it (module docstring), or a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"tokenizer file {path} not found; train one with `python3 -m tokenizer.train`"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
        settings = path.with_name(CONFIG_FILE)
        settings = json.loads(settings.read_text()) if settings.is_file() else None
    except Exception as error:  # tokenizers raises plain Exception subclasses with long messages
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path} is not a Hugging Face tokenizer.json ({first_line})") from None
    if settings is None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected_id:
                raise UserError(
                    f"{path} does not reserve {token} at id {expected_id}; retrain it "
                    f"with `python3 -m tokenizer.train` (or keep the {CONFIG_FILE} "
                    "it came with beside it)"
                )
    tokens = {name: token_text((settings or OUR_TOKENS).get(name)) for name in OUR_TOKENS}
    template = CHAT_TEMPLATE if settings is None else settings.get("chat_template")
    if isinstance(template, list):  # several named templates: transformers uses "default"
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    if path.with_name(TEMPLATE_FILE).is_file():
        template = path.with_name(TEMPLATE_FILE).read_text()
    tokenizer.encode_special_tokens = True  # raw text never produces special ids
    return ChatTokenizer(tokenizer, tokens, template, str(path))
