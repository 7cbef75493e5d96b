"""The OpenAI wire format: request models (validated once, naming the bad field), response and
stream-chunk bodies, and `error_response`, the one map from exceptions to HTTP errors with an
OpenAI error body `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.serving.engine import SamplingParams

log = logging.getLogger(__name__)

MAX_N = 16
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 409: "conflict_error", 422: "invalid_request_error"}
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "response_format", "logit_bias", "echo",
               "best_of", "suffix")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampled(BaseModel):
    """Fields shared by chat and text completions. Unknown fields (user, metadata, ...) are
    accepted and ignored, as OpenAI-compatible servers do; fields that change the answer's
    shape and are not implemented are refused by `check_unsupported`."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    def check_unsupported(self) -> None:
        for name in UNSUPPORTED:
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, [], {}) and not (name == "response_format" and value == {"type": "text"}):
                raise ValidationError(f"`{name}` is not supported by this server.", param=name)
        stops = self.stops()
        if len(stops) > 4 or any(not s for s in stops):
            raise ValidationError("`stop` takes up to 4 non-empty strings.", param="stop")

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(self, prompt_tokens: int, context: int, default_max: int, max_tokens_field: str = "max_tokens"
                 ) -> SamplingParams:
        room = context - prompt_tokens
        if room < 1:
            raise ValidationError(f"The prompt is {prompt_tokens} tokens; this model's context is {context} tokens.",
                                  param="messages" if max_tokens_field != "prompt" else "prompt")
        max_tokens = self.max_tokens or (self.model_extra or {}).get("max_completion_tokens")
        if max_tokens is not None and max_tokens > room:
            raise ValidationError(f"This model's maximum context length is {context} tokens; the prompt is "
                                  f"{prompt_tokens} and max_tokens is {max_tokens}.", param="max_tokens")
        return SamplingParams(temperature=1.0 if self.temperature is None else self.temperature,
                              top_p=1.0 if self.top_p is None else self.top_p,
                              max_tokens=int(max_tokens or min(default_max, room)), stop=self.stops(),
                              seed=self.seed, n=self.n)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)

    def chat(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            content = m.content if isinstance(m.content, str) or m.content is None else \
                "".join(p.text for p in m.content)
            out.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
        return out


class CompletionRequest(_Sampled):
    prompt: str | list[str]

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise ValidationError("`prompt` is empty.", param="prompt")
        return prompts


class LoadLoraAdapterRequest(BaseModel):
    lora_name: str = Field(min_length=1, max_length=128)
    lora_path: str = Field(min_length=1)


class UnloadLoraAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # vLLM clients may send lora_int_id
    lora_name: str = Field(min_length=1)


class LoadModelRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    model_path: str = Field(min_length=1)


class UnloadModelRequest(BaseModel):
    name: str = Field(min_length=1)


# ---- response bodies --------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(rid: str, model: str, texts: list[str], reasons: list[str], use: dict[str, int]) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r,
                         "logprobs": None} for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": use, "system_fingerprint": None}


def chat_chunk(rid: str, model: str, created: int, index: int | None, delta: dict[str, Any] | None,
               finish_reason: str | None = None, use: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if index is None else [{"index": index, "delta": delta or {}, "finish_reason": finish_reason,
                                         "logprobs": None}]
    body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if use is not None:
        body["usage"] = use
    return body


def completion_response(rid: str, model: str, texts: list[str], reasons: list[str], use: dict[str, int]
                        ) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": t, "finish_reason": r, "logprobs": None}
                        for i, (t, r) in enumerate(zip(texts, reasons))], "usage": use}


def completion_chunk(rid: str, model: str, created: int, index: int | None, text: str,
                     finish_reason: str | None = None, use: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if index is None else [{"index": index, "text": text, "finish_reason": finish_reason,
                                         "logprobs": None}]
    body = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if use is not None:
        body["usage"] = use
    return body


def model_card(m: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": m["id"], "object": "model", "created": created, "owned_by": "tuneloop", "root": m["root"],
            "parent": m["parent"], "kind": m["kind"]}


# ---- errors -----------------------------------------------------------------------------------
def error_body(status: int, message: str, *, type: str | None = None, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    default = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": type or ERROR_TYPES.get(status, default),
                      "param": param, "code": code}}


def validation_param(loc: tuple | list) -> str:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "list[", "str", "literal[")):
            out += ("." if out else "") + part
    return out or "body"


def error_response(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The one map from an exception to (HTTP status, OpenAI error body)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    if isinstance(exc, TuneloopError):
        message = exc.message + (f" {exc.hint}" if exc.hint else "")
        return exc.http_status, error_body(exc.http_status, message, param=exc.param, code=exc.code)
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        param = validation_param(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return 400, error_body(400, f"The request body is not valid JSON: {first.get('msg')}", param="body",
                                   code="invalid_json")
        return 400, error_body(400, f"Invalid value for `{param}`: {first.get('msg')}", param=param,
                               code="invalid_value" if first.get("type") != "missing" else "missing_field")
    if isinstance(exc, HTTPException):
        return exc.status_code, error_body(exc.status_code, str(exc.detail), code=None)
    log.error("unhandled error", exc_info=exc)
    return 500, error_body(500, f"Internal server error: {type(exc).__name__}: {exc}", code="server_error")
