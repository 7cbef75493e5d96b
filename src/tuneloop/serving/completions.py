"""Chat and text completions over an engine: check the request, tokenize, submit, then answer
whole or stream it as server-sent events. The two differ only in how they tokenize and in
their wire shape (protocol.CHAT, protocol.TEXT); one generator streams both.

    completions = Completions(engine, default_max_tokens=256, limits=Limits())
    out = await completions.chat(req)     # a response body, or an async iterator of SSE lines
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from tuneloop.errors import ValidationError
from tuneloop.serving import protocol as P
from tuneloop.serving.engine import GeneratingEngine, SamplingParams
from tuneloop.serving.limits import Limits, check_prompt_chars

DEFAULT_MAX_TOKENS = 256


class Answer:
    """Events of one submitted request, moved from the engine's thread onto the event loop."""

    def __init__(self, engine: GeneratingEngine, model: str, prompts: list[list[int]],
                 params: SamplingParams) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices = len(prompts) * params.n
        self.ticket = engine.submit(model, prompts, params, self._sink)

    def _sink(self, kind: str, index: int, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, index, value))

    async def events(self) -> AsyncIterator[tuple[str, int, Any]]:
        """("text", i, delta) and ("finish", i, (reason, tokens)) until every choice finished."""
        left = self.choices
        try:
            while left:
                kind, index, value = await self.queue.get()
                if kind == "error":
                    raise value
                if kind == "finish":
                    left -= 1
                yield kind, index, value
        finally:
            if left:
                self.ticket.cancel()  # the client went away: stop generating

    async def collect(self) -> tuple[list[str], list[str], int]:
        texts, reasons, tokens = [""] * self.choices, ["stop"] * self.choices, 0
        async for kind, index, value in self.events():
            if kind == "text":
                texts[index] += value
            else:
                reasons[index], n = value
                tokens += n
        return texts, reasons, tokens


class Completions:
    """The /v1/chat/completions and /v1/completions logic; the routes only call it."""

    def __init__(self, engine: GeneratingEngine, *, default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 limits: Limits = Limits()) -> None:
        self.engine, self.default_max_tokens, self.limits = engine, default_max_tokens, limits

    async def chat(self, req: P.ChatCompletionRequest) -> dict[str, Any] | AsyncIterator[str]:
        req.check_unsupported()
        context = self.engine.context_length(req.model)
        check_prompt_chars(req.prompt_chars(), context, "messages")
        prompts = [self.engine.encode(req.model, messages=req.chat())]
        return await self._answer(req, prompts, context, P.CHAT, "messages")

    async def text(self, req: P.CompletionRequest) -> dict[str, Any] | AsyncIterator[str]:
        req.check_unsupported()
        context = self.engine.context_length(req.model)
        check_prompt_chars(req.prompt_chars(), context, "prompt")
        prompts = [self.engine.encode(req.model, text=p) for p in req.prompts()]
        if not all(prompts):
            raise ValidationError("`prompt` must not be empty.", param="prompt")
        return await self._answer(req, prompts, context, P.TEXT, "prompt")

    async def _answer(self, req: P.ChatCompletionRequest | P.CompletionRequest, prompts: list[list[int]],
                      context: int, shape: P.Shape, param: str) -> dict[str, Any] | AsyncIterator[str]:
        params = req.sampling(max(map(len, prompts)), context, self.default_max_tokens, param, prompts=len(prompts),
                              budget=self.limits.token_budget(context))
        answer = Answer(self.engine, req.model, prompts, params)
        rid, prompt_tokens = P.new_id(shape.id_prefix), sum(map(len, prompts))
        if not req.stream:
            texts, reasons, tokens = await answer.collect()
            return shape.response(rid, req.model, texts, reasons, P.usage(prompt_tokens, tokens))
        return stream(answer, shape, rid, req.model, prompt_tokens, req.include_usage)


async def stream(answer: Answer, shape: P.Shape, rid: str, model: str, prompt_tokens: int,
                 include_usage: bool) -> AsyncIterator[str]:
    """The SSE lines of one answer: each choice's opening (chat: the role), its text pieces, its
    finish, then the usage when asked for and `[DONE]`. An engine failure after the response
    started is reported in-stream as an OpenAI error body."""
    now, tokens = int(time.time()), 0
    if shape.opening is not None:
        for i in range(answer.choices):
            yield sse(P.chunk(shape, rid, model, now, i, shape.opening))
    try:
        async for kind, index, value in answer.events():
            if kind == "text":
                if value:
                    yield sse(P.chunk(shape, rid, model, now, index, shape.piece(value)))
            else:
                reason, n = value
                tokens += n
                yield sse(P.chunk(shape, rid, model, now, index, shape.piece(""), reason))
    except Exception as e:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        yield sse(P.error_response(e)[1])
    if include_usage:
        yield sse(P.chunk(shape, rid, model, now, None, None, use=P.usage(prompt_tokens, tokens)))
    yield sse("[DONE]")


def sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"
