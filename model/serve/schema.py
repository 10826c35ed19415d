"""What the server accepts: OpenAI-style requests, checked, and OpenAI-style errors.

Fields we do not use (frequency_penalty, user, ...) are ignored, as OpenAI-compatible servers do;
a wrong type or value in one we use is a 400 that names it. Roles: system, user, assistant and
developer (OpenAI's newer system); content: a string or a list of {"type": "text"} parts.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.generate import SEEDS

MAX_BODY_BYTES = 1 << 20  # a request body larger than this is a 413
NonEmpty = Annotated[str, Field(min_length=1)]


class ApiError(Exception):
    """An error the client gets as {"error": {message, type, param, code}} with this status."""

    TYPES = {401: "authentication_error", 404: "not_found_error"}  # else by the status's class

    def __init__(self, status: int, message: str, code: str | None = None, param=None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        kind = self.TYPES.get(self.status, kind)
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return {"error": error}


class Strict(BaseModel):
    # strict: "0.5" is not a number and 1 is not a boolean; extra fields are ignored
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_message(self) -> dict:
        """The {role, content} dict tokenizer.encoding renders."""
        content = self.content
        if not isinstance(content, str):
            content = "".join(part.text for part in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(Strict):
    include_usage: bool = False


class GenerationRequest(Strict):
    """The fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=4)] | None = None
    seed: int | None = Field(None, ge=SEEDS.start, lt=SEEDS.stop)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = 1  # one choice per request


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer max_tokens


class CompletionRequest(GenerationRequest):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]  # one prompt


async def read_request(request: Request, api_key: str | None, schema=None) -> Strict | None:
    """The request's validated body (none without a schema), or an ApiError: 401 without the
    API key, 413 past MAX_BODY_BYTES, 400 naming the first bad field."""
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if api_key is not None and not secrets.compare_digest(given.encode(), api_key.encode()):
        message = "invalid or missing API key (send the header Authorization: Bearer <key>)"
        raise ApiError(401, message, "invalid_api_key")
    if schema is None:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:  # JSON may spell a lone UTF-16 surrogate (\ud800), which no text can hold
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        message = "the request holds a lone surrogate (like \\ud800), which is not valid Unicode"
        raise ApiError(400, message) from None
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"{param}: {message}" if param else message, param=param) from None
