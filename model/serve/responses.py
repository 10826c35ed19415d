"""What model.serve sends: reply text cut at stop strings, and OpenAI's response shapes.

A reply is streamed as the model makes it, so text is released only when it is certain: whole
UTF-8 characters (StreamDecoder), and never the start of what may become a stop string.
"""

from __future__ import annotations

import json
import time
import uuid

from tokenizers import Tokenizer

from model.generate import StreamDecoder
from model.streams import Stream


class ReplyText:
    """Token ids -> text to send: whole UTF-8 characters, cut at the first stop string."""

    def __init__(self, tokenizer: Tokenizer, stops: list[str]):
        self.decoder = StreamDecoder(tokenizer)
        self.stops = stops
        self.text = ""  # decoded so far
        self.sent = 0  # characters of self.text already returned
        self.stopped = False  # a stop string was found
        self.tokens = 0  # token ids received

    def push(self, token_id: int) -> str:
        self.tokens += 1
        self.text += self.decoder.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        if not self.stopped:
            self.text += self.decoder.finish()
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        end = len(self.text)
        for stop in self.stops:  # text before the earliest stop string, and nothing after it
            found = self.text.find(stop, self.sent)
            if 0 <= found < end:
                end, self.stopped = found, True
        if not self.stopped and not final:
            end -= self._maybe_a_stop()
        new_text, self.sent = self.text[self.sent : end], end
        return new_text

    def _maybe_a_stop(self) -> int:
        """Characters at the end that begin a stop string: held back until we know."""
        unsent, held = len(self.text) - self.sent, 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, unsent), held, -1):
                if self.text.endswith(stop[:size]):
                    held = size
                    break
        return held


def finish_reason(reason, reply: ReplyText) -> str:
    return "stop" if reply.stopped else ("length" if reason == "length" else "stop")


def usage(stream: Stream, reply: ReplyText) -> dict:
    prompt, completion = stream.prompt_length, reply.tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


class Chunks:
    """OpenAI's response shapes for one request: chat.completion(.chunk), text_completion."""

    def __init__(self, model: str, chat: bool):
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices, **extra}  # fmt: skip

    def delta(self, text: str = "", role: bool = False, finish_reason: str | None = None) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage: dict) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, [], usage=usage)

    def whole(self, text: str, finish_reason: str, usage: dict) -> dict:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": finish_reason,
                      "logprobs": None}  # fmt: skip
            return self._envelope("chat.completion", [choice], usage=usage)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice], usage=usage)
