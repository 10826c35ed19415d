"""The HTTP side of model.serve: OpenAI-compatible routes and the chat page (FastAPI).

    GET  /                      the chat page (model/serve/chat_page.html)
    GET  /v1/models             the one model this server serves
    POST /v1/chat/completions   messages -> reply (rendered by the model's chat template)
    POST /v1/completions        plain text -> continuation (a document: BOS + prompt)

With "stream": true the replies are server-sent events in OpenAI's chunk format. The worker
thread generates (worker.py); here the prompt is rendered and token ids become text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from model.generate import Sampling, Stream, StreamDecoder
from model.serve.schema import ApiError, ChatCompletionRequest, CompletionRequest, read_request
from model.serve.worker import GenerationWorker, Job
from tokenizer.encoding import ChatTokenizer

DISCONNECT_POLL_S = 0.25  # how often a request waiting for tokens checks its client is there


@dataclass
class ServedModel:
    name: str
    tokenizer: ChatTokenizer
    worker: GenerationWorker
    api_key: str | None = None


def create_app(served: ServedModel) -> FastAPI:
    app = FastAPI(title="Simple Transformer", docs_url=None, redoc_url=None, openapi_url=None)
    page = Path(__file__).with_name("chat_page.html").read_text()

    @app.exception_handler(ApiError)
    @app.exception_handler(HTTPException)  # 404 for an unknown path, say
    @app.exception_handler(Exception)  # a bug: still an OpenAI-style error
    async def error_response(request: Request, error: Exception):
        if isinstance(error, HTTPException):
            error = ApiError(error.status_code, str(error.detail))
        elif not isinstance(error, ApiError):
            error = ApiError(500, f"internal error: {type(error).__name__}: {error}")
        return JSONResponse(error.body(), status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page)

    @app.get("/v1/models")
    async def models(request: Request):
        await read_request(request, served.api_key)
        card = {"id": served.name, "object": "model", "created": 0, "owned_by": "local"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_request(request, served.api_key, ChatCompletionRequest)
        messages = [message.as_message() for message in body.messages]
        prompt_ids = served.tokenizer.prompt(messages)  # user text cannot forge a turn
        max_tokens = body.max_completion_tokens or body.max_tokens
        return await respond(request, served, body, prompt_ids, max_tokens, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_request(request, served.api_key, CompletionRequest)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        prompt_ids = served.tokenizer.document(prompt)
        return await respond(request, served, body, prompt_ids, body.max_tokens, chat=False)

    return app


def checked_stream(served: ServedModel, body, prompt_ids: list[int], max_tokens, chat) -> Stream:
    if body.model not in (None, served.name):
        message = f"the model '{body.model}' does not exist; this server serves '{served.name}'"
        raise ApiError(404, message, "model_not_found", "model")
    block, prompt = served.worker.model.config.block_size, len(prompt_ids)
    room = block - prompt
    if room <= 0:
        message = f"the prompt is {prompt} tokens; this model's context is {block} tokens"
        raise ApiError(400, message, "context_length_exceeded", "messages" if chat else "prompt")
    if max_tokens is not None and max_tokens > room:
        message = f"max_tokens={max_tokens} goes beyond the context: the prompt leaves {room}"
        raise ApiError(400, message, "context_length_exceeded", "max_tokens")
    temperature = 1.0 if body.temperature is None else body.temperature
    sampling = Sampling(temperature, top_p=body.top_p, seed=body.seed)
    return Stream(prompt_ids, max_tokens or room, sampling, served.tokenizer.stop_ids)


async def respond(request: Request, served: ServedModel, body, prompt_ids, max_tokens, chat):
    stream = checked_stream(served, body, prompt_ids, max_tokens, chat)
    job = served.worker.submit(stream)
    reply = Reply(served.name, chat, served.tokenizer, body.stop, stream)
    try:
        first = await next_event(request, job)  # errors before any text are plain JSON errors
        if first[0] == "error":
            raise first[1]
        if not body.stream:
            text = "".join([piece async for piece in reply.texts(job, first, request)])
            return reply.whole(text)
    except BaseException:
        job.cancelled = True  # the client left, or the request failed: free its row
        raise
    usage = bool(body.stream_options and body.stream_options.include_usage)
    return JobResponse(job, events(job, first, reply, usage), media_type="text/event-stream")


class JobResponse(StreamingResponse):
    """A stream that frees its job's row however it ends, even when the client leaves before the
    event generator starts (Starlette then never runs it, nor a `finally` in it)."""

    def __init__(self, job: Job, content, **kwargs):
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled = True  # no-op when it finished


async def next_event(request: Request | None, job: Job) -> tuple[str, object]:
    """The job's next event; a client that has left cancels it (499), asked on a timer (tokens
    may come faster all along). A streamed reply passes no request: Starlette notices then."""
    while request is not None:
        if time.monotonic() - job.client_checked_at >= DISCONNECT_POLL_S:
            job.client_checked_at = time.monotonic()
            if await request.is_disconnected():
                raise ApiError(499, "client closed the request")
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
    return await job.events.get()


async def events(job: Job, first, reply: Reply, include_usage: bool):
    """Server-sent events: the role, text chunks, a finish chunk, [usage], then [DONE]."""
    if reply.chat:
        yield sse(reply.chunk(role=True))
    try:
        async for text in reply.texts(job, first):
            if text:
                yield sse(reply.chunk(text))
        yield sse(reply.chunk(finish_reason=reply.finish_reason))
        if include_usage:
            yield sse(reply.envelope([], usage=reply.usage()))
    except ApiError as error:  # the headers are sent: report it in the stream, and end
        yield sse(error.body())
    yield "data: [DONE]\n\n"


def sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


def stop_prefix_length(text: str, stops: list[str]) -> int:
    """How much of text's end may begin a stop string: held back until the next token tells."""
    ends = [n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])]
    return max(ends, default=0)


class Reply:
    """One request's reply: token ids -> the text to send (whole UTF-8 characters, cut before
    the first stop string, holding back what may yet start one), in OpenAI's shapes."""

    def __init__(self, model: str, chat: bool, tokenizer: ChatTokenizer, stops, stream: Stream):
        self.model, self.chat, self.stream = model, chat, stream
        self.stops = [stops] if isinstance(stops, str) else stops or []
        self.decoder = StreamDecoder(tokenizer)
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.text, self.sent = "", 0  # decoded so far; characters of it already sent
        self.tokens, self.stopped = 0, False  # token ids received; a stop string was found
        self.finish_reason = "stop"

    async def texts(self, job: Job, event, request: Request | None = None):
        """The reply's text, piece by piece, from the job's events (raises its error)."""
        while True:
            kind, value = event
            if kind == "error":
                raise value
            yield self.push(value if kind == "token" else None)
            if kind == "done" or self.stopped:
                job.cancelled = True  # a stop string: no more tokens needed (no-op when done)
                self.finish_reason = "length" if value == "length" and not self.stopped else "stop"
                return
            event = await next_event(request, job)

    def push(self, token_id: int | None) -> str:
        """The text that token_id (None: the end) makes certain."""
        if token_id is not None:
            self.tokens += 1
            self.text += self.decoder.push(token_id)
        elif not self.stopped:
            self.text += self.decoder.finish()
        if self.stopped:
            return ""
        end = len(self.text)
        for stop in self.stops:  # text before the earliest stop string, and nothing after it
            found = self.text.find(stop, self.sent)
            if 0 <= found < end:
                end, self.stopped = found, True
        if not self.stopped and token_id is not None:
            end -= stop_prefix_length(self.text[self.sent :], self.stops)
        new_text, self.sent = self.text[self.sent : end], end
        return new_text

    def usage(self) -> dict:
        prompt, completion = self.stream.prompt_length, self.tokens
        total = prompt + completion
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}

    def envelope(self, choices: list, chunk: bool = True, **extra) -> dict:
        kind = "text_completion" if not self.chat else "chat.completion" + ".chunk" * chunk
        head = {"id": self.id, "object": kind, "created": self.created, "model": self.model}
        return {**head, "choices": choices, **extra}

    def chunk(self, text: str = "", role: bool = False, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "finish_reason": finish_reason}
        if not self.chat:
            return self.envelope([{**choice, "text": text, "logprobs": None}])
        delta = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        return self.envelope([{**choice, "delta": delta}])

    def whole(self, text: str) -> dict:
        choice = {"index": 0, "finish_reason": self.finish_reason, "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return self.envelope([choice], chunk=False, usage=self.usage())
