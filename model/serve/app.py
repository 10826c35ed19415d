"""The HTTP side of model.serve: OpenAI-compatible routes and the chat page (FastAPI).

    GET  /                      the chat page (model/serve/chat_page.html)
    GET  /v1/models             the one model this server serves
    POST /v1/chat/completions   messages -> reply (the chat format of tokenizer/encoding.py)
    POST /v1/completions        plain text -> continuation (<|endoftext|> + prompt)

Both POST routes stream server-sent events in OpenAI's chunk format with "stream": true, ending
with `data: [DONE]`. Generation itself happens in the worker thread (model/serve/worker.py);
here we check the request, render the prompt, and turn token ids into text.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from tokenizers import Tokenizer

from model.serve.responses import Chunks, ReplyText, finish_reason, sse, usage
from model.serve.schema import (
    MAX_BODY_BYTES,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
    parse_request,
)
from model.serve.worker import GenerationWorker, Job
from model.streams import Sampling, Stream
from tokenizer.encoding import STOP_IDS, encode_document, encode_prompt

CHAT_PAGE = Path(__file__).with_name("chat_page.html")
DISCONNECT_POLL_S = 0.25  # how often a request waiting for tokens checks its client is there


@dataclass
class ServedModel:
    name: str
    tokenizer: Tokenizer
    block_size: int
    worker: GenerationWorker
    api_key: str | None = None


def create_app(served: ServedModel) -> FastAPI:
    app = FastAPI(title="Simple Transformer", docs_url=None, redoc_url=None, openapi_url=None)
    page = CHAT_PAGE.read_text()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse(
            ApiError(error.status_code, str(error.detail)).body(), error.status_code
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):  # a bug: still OpenAI-shaped
        message = f"internal error: {type(error).__name__}: {error}"
        return JSONResponse(ApiError(500, message).body(), 500)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page)

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request, served.api_key)
        card = {"id": served.name, "object": "model", "created": 0, "owned_by": "local"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request, served.api_key)
        body = parse_request(await read_body(request), ChatCompletionRequest)
        messages = [message.as_message() for message in body.messages]
        prompt_ids = encode_prompt(served.tokenizer, messages)  # user text cannot forge a turn
        newer = body.max_completion_tokens  # OpenAI's newer name; 0 must stay 0 (a 400)
        max_tokens = body.max_tokens if newer is None else newer
        return await respond(request, served, body, prompt_ids, max_tokens, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        check_key(request, served.api_key)
        body = parse_request(await read_body(request), CompletionRequest)
        prompt_ids = encode_document(served.tokenizer, body.prompt)
        return await respond(request, served, body, prompt_ids, body.max_tokens, chat=False)

    return app


def check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(given.encode(), api_key.encode()):
        message = "invalid or missing API key (send the header Authorization: Bearer <key>)"
        raise ApiError(401, message, "invalid_api_key")


async def read_body(request: Request) -> bytes:
    """The body, or a 413 as soon as it passes MAX_BODY_BYTES (declared or streamed)."""
    too_large = ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def checked_stream(
    served: ServedModel,
    body: GenerationRequest,
    prompt_ids: list[int],
    max_tokens: int | None,
    chat: bool,
) -> Stream:
    if body.model not in (None, served.name):
        message = f"the model '{body.model}' does not exist; this server serves '{served.name}'"
        raise ApiError(404, message, "model_not_found", "model")
    block = served.block_size
    room = block - len(prompt_ids)
    if room <= 0:
        message = f"the prompt is {len(prompt_ids)} tokens; this model's context is {block} tokens"
        raise ApiError(400, message, "context_length_exceeded", "messages" if chat else "prompt")
    if max_tokens is not None and max_tokens <= 0:
        raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    if max_tokens is not None and max_tokens > room:
        message = (
            f"max_tokens={max_tokens} goes beyond the context: the prompt is "
            f"{len(prompt_ids)} tokens of {block}, so at most {room}"
        )
        raise ApiError(400, message, "context_length_exceeded", "max_tokens")
    sampling = Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )
    vocab_size = served.tokenizer.get_vocab_size()
    return Stream(prompt_ids, max_tokens or room, sampling, STOP_IDS, vocab_size)


async def respond(request, served, body, prompt_ids, max_tokens, chat: bool):
    stream = checked_stream(served, body, prompt_ids, max_tokens, chat)
    job = served.worker.submit(stream)
    reply = ReplyText(served.tokenizer, body.stop or [])
    chunks = Chunks(served.name, chat)
    client = Client(request)
    try:
        first = await next_event(client, job)  # errors before any text are plain JSON errors
        if first[0] == "error":
            raise first[1]
        if not body.stream:
            text, reason = await collect(client, job, reply, first)
            return chunks.whole(text, reason, usage(stream, reply))
    except BaseException:
        job.cancelled = True  # the client left, or the request failed: free its row
        raise
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = sse_events(job, first, reply, chunks, stream, include_usage)
    return JobResponse(job, events, media_type="text/event-stream")


class JobResponse(StreamingResponse):
    """A stream that frees its job's row however it ends: finished, failed, or cut off by a
    client that left, even before the event generator ever started (Starlette then never
    runs that generator, so a `finally` inside it would not run either)."""

    def __init__(self, job: Job, content, **kwargs):
        super().__init__(content, **kwargs)
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancelled = True  # no-op when it finished


class Client:
    """The client of one request: whether it has left, asked at most every DISCONNECT_POLL_S
    (a streamed reply learns it from a failed send; a non-streamed one must ask)."""

    def __init__(self, request: Request):
        self.request, self.asked_at = request, time.monotonic()

    async def left(self) -> bool:
        if time.monotonic() - self.asked_at < DISCONNECT_POLL_S:
            return False
        self.asked_at = time.monotonic()
        return await self.request.is_disconnected()


async def next_event(client: Client, job: Job) -> tuple[str, object]:
    """The job's next event; a client that has gone away cancels it (499), whether tokens are
    arriving or not (they may arrive faster than DISCONNECT_POLL_S for a whole long reply)."""
    while True:
        if await client.left():
            raise ApiError(499, "client closed the request")
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)


async def collect(client: Client, job: Job, reply: ReplyText, event) -> tuple[str, str]:
    """The whole reply of a non-streamed request."""
    parts = []
    while True:
        kind, value = event
        if kind == "error":
            raise value
        if kind == "token":
            parts.append(reply.push(value))
            if reply.stopped:
                job.cancelled = True  # a stop string: no more tokens needed
                return "".join(parts), "stop"
        if kind == "done":
            return "".join(parts) + reply.finish(), finish_reason(value, reply)
        event = await next_event(client, job)


async def sse_events(job, first, reply, chunks, stream, include_usage) -> AsyncIterator[str]:
    """Server-sent events: text chunks, a finish chunk, [usage], then [DONE] (JobResponse
    frees the row when the stream ends, however it ends)."""
    if chunks.chat:
        yield sse(chunks.delta(role=True))
    event = first
    while True:
        kind, value = event
        if kind == "error":  # headers are sent: report it in the stream and end
            yield sse(value.body())
            break
        text = reply.push(value) if kind == "token" else reply.finish()
        if text:
            yield sse(chunks.delta(text))
        if kind == "done" or reply.stopped:
            yield sse(chunks.delta(finish_reason=finish_reason(value, reply)))
            if include_usage:
                yield sse(chunks.usage_chunk(usage(stream, reply)))
            break
        event = await job.events.get()
    yield "data: [DONE]\n\n"
