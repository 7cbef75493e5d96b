"""The OpenAI wire format: request models (validated once, naming the bad field), response bodies,
the two stream-chunk shapes (CHAT, TEXT), and `error_response`, the one map from exceptions (the
TuneloopError family of errors.py, FastAPI's validation and HTTP errors, anything else as a 500) to
an HTTP status and an OpenAI error body `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.serving.engine import SamplingParams

log = logging.getLogger(__name__)

# Bounds of one request's fields (OpenAI's where it has one); the body itself is capped by
# limits.BodyLimit, the prompt's length and the tokens to generate by limits.Limits.
MAX_N = 16
MAX_STOPS, MAX_STOP_CHARS = 4, 256
MAX_MESSAGES, MAX_PARTS = 1024, 256
MAX_PROMPTS = 64                       # prompts of one /v1/completions request
MAX_NAME_CHARS, MAX_PATH_CHARS = 128, 4096
MAX_TOKENS = 2**31 - 1                 # max_tokens above any context; the context check names the real limit
SEED_RANGE = (-(2**63), 2**63 - 1)     # int64, what torch.Generator.manual_seed takes (choice i adds i)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
               422: "invalid_request_error"}
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "response_format", "logit_bias", "echo",
               "best_of", "suffix")


def check_json_text(data: Any) -> None:
    """Refuse strings (values or keys, at any depth) that are not valid Unicode: JSON's `"\\ud800"`
    escapes decode to lone surrogates, which no tokenizer, template or UTF-8 response can hold.
    Iterative, so deep nesting costs no recursion."""
    stack = [(data, "body")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if _bad_text(value):
                raise ValidationError(f"`{where}` contains a lone UTF-16 surrogate (e.g. \"\\ud800\"), which is not "
                                      "valid Unicode.", param=where,
                                      hint="Send text as valid UTF-8; surrogates must come in pairs.")
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and _bad_text(k):
                    raise ValidationError(f"A key in `{where}` contains a lone UTF-16 surrogate, which is not "
                                          "valid Unicode.", param=where,
                                          hint="Send text as valid UTF-8; surrogates must come in pairs.")
                stack.append((v, k if where == "body" else f"{where}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def _bad_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Body(BaseModel):
    """A request body: a JSON object whose strings are valid Unicode. The ValidationError raised
    here is not pydantic's, so it passes through validation to the server's error handler."""

    @model_validator(mode="before")
    @classmethod
    def _json_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValidationError(f"The request body must be a JSON object, not {_json_type(data)}.", param="body",
                                  hint="Send Content-Type: application/json and an object such as "
                                       '{"model": ..., "messages": [...]}.')
        check_json_text(data)
        return data


def _json_type(data: Any) -> str:
    if isinstance(data, (bytes, bytearray)):
        return "a non-JSON body"
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(data), type(data).__name__)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None
    name: str | None = Field(None, max_length=MAX_NAME_CHARS)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampled(_Body):
    """Fields shared by chat and text completions. Unknown fields (user, metadata, ...) are
    accepted and ignored, as OpenAI-compatible servers do; fields that change the answer's
    shape and are not implemented are refused by `check_unsupported`."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=MAX_PATH_CHARS)  # a base may be named by its folder
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None

    def check_unsupported(self) -> None:
        """Refuse what is not implemented, and the bounds pydantic's union errors would word poorly."""
        for name in UNSUPPORTED:
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, [], {}) and not (name == "response_format" and value == {"type": "text"}):
                raise ValidationError(f"`{name}` is not supported by this server.", param=name)
        stops = self.stops()
        if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValidationError(f"`stop` takes up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} "
                                  "characters.", param="stop")
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise ValidationError(f"`max_tokens` ({self.max_tokens}) and `max_completion_tokens` "
                                  f"({self.max_completion_tokens}) disagree.", param="max_completion_tokens",
                                  hint="Send one of them (max_completion_tokens is the newer name).")

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(self, prompt_tokens: int, context: int, default_max: int, prompt_param: str = "messages", *,
                 prompts: int = 1, budget: int | None = None) -> SamplingParams:
        """The decoding settings, once the prompt's length is known: the prompt and max_tokens must
        fit the context, and `prompts × n × max_tokens` (the tokens this request asks the server to
        generate) must fit `budget`."""
        room = context - prompt_tokens
        if room < 1:
            raise ValidationError(f"The prompt is {prompt_tokens} tokens; this model's context is {context} tokens.",
                                  param=prompt_param)
        field = "max_tokens" if self.max_tokens is not None else "max_completion_tokens"
        asked = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        if asked is not None and asked > room:
            raise ValidationError(f"This model's maximum context length is {context} tokens; the prompt is "
                                  f"{prompt_tokens} and {field} is {asked}.", param=field)
        max_tokens = int(asked or min(default_max, room))
        work = prompts * self.n * max_tokens
        if budget is not None and work > budget:
            param = "n" if self.n > 1 else prompt_param
            raise ValidationError(f"This request asks for {prompts} prompt(s) x n={self.n} x {field}={max_tokens} = "
                                  f"{work} tokens; this server generates at most {budget} tokens per request.",
                                  param=param, hint="Lower n or max_tokens, or send fewer prompts per request.")
        return SamplingParams(temperature=1.0 if self.temperature is None else self.temperature,
                              top_p=1.0 if self.top_p is None else self.top_p, max_tokens=max_tokens,
                              stop=self.stops(), seed=self.seed, n=self.n)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)

    def check_unsupported(self) -> None:
        super().check_unsupported()
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list) and len(m.content) > MAX_PARTS:
                raise ValidationError(f"`messages[{i}].content` has {len(m.content)} parts; at most {MAX_PARTS} are "
                                      "accepted.", param=f"messages[{i}].content")

    def prompt_chars(self) -> int:
        return sum(len(m.content) if isinstance(m.content, str) else sum(len(p.text) for p in m.content or [])
                   for m in self.messages)

    def chat(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            content = m.content if isinstance(m.content, str) or m.content is None else \
                "".join(p.text for p in m.content)
            out.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
        return out


class CompletionRequest(_Sampled):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def prompt_chars(self) -> int:
        return max(map(len, self.prompts()))  # each prompt is its own row: the longest must fit


class LoadLoraAdapterRequest(_Body):
    lora_name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    lora_path: str = Field(min_length=1, max_length=MAX_PATH_CHARS)


class UnloadLoraAdapterRequest(_Body):
    model_config = ConfigDict(extra="allow")  # vLLM clients may send lora_int_id
    lora_name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class LoadModelRequest(_Body):
    name: str = Field(min_length=1, max_length=MAX_PATH_CHARS)  # a base may be named by its folder
    model_path: str = Field(min_length=1, max_length=MAX_PATH_CHARS)


class UnloadModelRequest(_Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


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


def completion_response(rid: str, model: str, texts: list[str], reasons: list[str], use: dict[str, int]
                        ) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": t, "finish_reason": r, "logprobs": None}
                        for i, (t, r) in enumerate(zip(texts, reasons))], "usage": use}



# ---- stream chunks: chat and text completions differ only in their shape -------------------------
@dataclass(frozen=True)
class Shape:
    """What a completion looks like on the wire: its id prefix, its whole response, and the
    fields a stream chunk's choice carries for a piece of text."""

    id_prefix: str
    chunk_object: str
    response: Callable[[str, str, list[str], list[str], dict[str, int]], dict[str, Any]]
    piece: Callable[[str], dict[str, Any]]   # a piece of text ("" when a choice finishes) -> choice fields
    opening: dict[str, Any] | None = None    # each choice's first chunk before any text (chat: the role)


def _chat_piece(text: str) -> dict[str, Any]:
    return {"delta": {"content": text} if text else {}}


def _text_piece(text: str) -> dict[str, Any]:
    return {"text": text}


CHAT = Shape("chatcmpl", "chat.completion.chunk", chat_response, _chat_piece,
             opening={"delta": {"role": "assistant", "content": ""}})
TEXT = Shape("cmpl", "text_completion", completion_response, _text_piece)


def chunk(shape: Shape, rid: str, model: str, created: int, index: int | None, fields: dict[str, Any] | None,
          finish_reason: str | None = None, use: dict[str, int] | None = None) -> dict[str, Any]:
    """One SSE chunk: a choice's `fields` (shape.piece or shape.opening), or no choice and the usage."""
    choices = [] if index is None else [{"index": index, **(fields or {}), "finish_reason": finish_reason,
                                         "logprobs": None}]
    body = {"id": rid, "object": shape.chunk_object, "created": created, "model": model, "choices": choices}
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


# the names pydantic gives a union's branches in an error's loc (not fields): `stop.str`, `prompt.list[str]`
_UNION_TAGS = {"str", "int", "float", "bool", "none", "constrained-str", "constrained-int"}
_UNION_TAG_PREFIXES = ("function-", "list[", "literal[", "dict[", "tagged-union[")


def validation_param(loc: tuple | list) -> str:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part not in _UNION_TAGS and not part.startswith(_UNION_TAG_PREFIXES):
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
        if exc.status_code == 400:  # FastAPI could not parse the body: not UTF-8, or nested too deeply
            why = {RecursionError: "it is nested too deeply", UnicodeDecodeError: "it is not UTF-8"}.get(
                type(exc.__cause__), str(exc.detail))
            return 400, error_body(400, f"The request body cannot be parsed as JSON: {why}.", param="body",
                                   code="invalid_json")
        return exc.status_code, error_body(exc.status_code, str(exc.detail), code=None)
    log.error("unhandled error", exc_info=exc)
    return 500, error_body(500, f"Internal server error: {type(exc).__name__}: {exc}", code="server_error")
