"""What one request may cost the server: its body's bytes, its prompt's length, the tokens it
asks to generate. Each is refused with an OpenAI error body before the work it would cause.

    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)   # 413 before the body is parsed
    check_prompt_chars(chars, context, "messages")                      # 400 before the tokenizer runs
    req.sampling(..., budget=limits.token_budget(context))               # 400: prompts x n x max_tokens

Knobs: `tuneloop serve --max-request-bytes N` (env TUNELOOP_MAX_REQUEST_BYTES, default 8 MiB) and
`--max-request-tokens N` (env TUNELOOP_MAX_REQUEST_TOKENS, default 64 x the model's context).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloop.errors import RequestTooLargeError, ValidationError
from tuneloop.serving.protocol import error_response

MIB = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 8 * MIB
# A token is rarely more than a few characters; 32 is far above what any tokenizer averages over a
# prompt, so a prompt longer than context x 32 characters cannot fit and is refused untokenized.
CHARS_PER_TOKEN_BOUND = 32
CONTEXTS_PER_REQUEST = 64      # default token budget of one request: 64 x the model's context


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_request_tokens: int | None = None   # prompts x n x max_tokens; None: 64 x the model's context

    def token_budget(self, context: int) -> int:
        return self.max_request_tokens or CONTEXTS_PER_REQUEST * context


def check_prompt_chars(chars: int, context: int, param: str) -> None:
    """Refuse a prompt whose length alone shows it cannot fit the context (no tokenizer call)."""
    if chars > context * CHARS_PER_TOKEN_BOUND:
        raise ValidationError(f"The prompt is {chars} characters; this model's context is {context} tokens, which "
                              f"holds far fewer ({CHARS_PER_TOKEN_BOUND} characters a token at most).", param=param,
                              hint="Shorten the prompt.")


class BodyLimit:
    """Pure ASGI middleware: a request body over `max_bytes` is answered 413 before the app sees
    it. A Content-Length over the limit is refused without reading a byte; a body without one
    (chunked) is counted as it arrives and reading stops at the limit (the server discards the
    rest). Bodies within the limit are buffered once and replayed to the app. `streamed` paths
    (file uploads) pass untouched: their route streams the body to disk under its own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes, self.streamed = app, max_bytes, streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("path") in self.streamed and scope.get("method") == "POST"):
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await self._refuse(scope, receive, send, f"{declared} bytes")
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, f"more than {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        status, body = error_response(RequestTooLargeError(
            f"The request body is {size}; this server accepts at most {self.max_bytes} bytes.", param="body",
            hint="Send a smaller request, or start the server with a larger --max-request-bytes "
                 "(env TUNELOOP_MAX_REQUEST_BYTES)."))
        await JSONResponse(body, status_code=status)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed Content-Length itself
    return None
