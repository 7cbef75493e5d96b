"""The OpenAI API: GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions and
/v1/completions (whole answers, or SSE streams with `"stream": true`)."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tuneloop.errors import ModelNotFoundError
from tuneloop.serving import protocol as P
from tuneloop.serving.completions import Completions
from tuneloop.serving.routes.auth import require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


def _completions(request: Request) -> Completions:
    return request.app.state.completions


def _respond(out: dict[str, Any] | AsyncIterator[str]):
    return out if isinstance(out, dict) else StreamingResponse(out, media_type="text/event-stream")


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {"object": "list", "data": [P.model_card(m, state.created) for m in state.engine.models()]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state
    models = state.engine.models()
    for m in models:
        if m["id"] == model_id:
            return P.model_card(m, state.created)
    raise ModelNotFoundError(model_id, [m["id"] for m in models])


@router.post("/v1/chat/completions")
async def chat_completions(req: P.ChatCompletionRequest, request: Request):
    return _respond(await _completions(request).chat(req))


@router.post("/v1/completions")
async def completions(req: P.CompletionRequest, request: Request):
    return _respond(await _completions(request).text(req))
