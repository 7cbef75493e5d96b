"""The OpenAI API: GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions and
/v1/completions (whole answers, or SSE streams with `"stream": true`).

Names under the server's on-demand prefix (`ft:`, the fine-tuning API's models: `app.state.on_demand`)
are the requesting project's only: another project's key gets 404 for them, as for a name that does
not exist, and one is loaded when a request first names it."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import ModelNotFoundError
from tuneloop.serving import protocol as P
from tuneloop.serving.completions import Completions
from tuneloop.serving.routes.auth import request_project, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


def _completions(request: Request) -> Completions:
    return request.app.state.completions


def _respond(out: dict[str, Any] | AsyncIterator[str]):
    return out if isinstance(out, dict) else StreamingResponse(out, media_type="text/event-stream")


async def _visible(request: Request) -> list[dict[str, Any]]:
    """What this request's project may use: everything served, except other projects' on-demand
    models, plus its own not loaded yet."""
    state = request.app.state
    models = state.engine.models()
    on_demand = getattr(state, "on_demand", None)
    if on_demand is None:
        return models
    mine = set(await run_in_threadpool(on_demand.names, request_project(request)))
    base = state.engine.base.name
    out = [m for m in models if not m["id"].startswith(on_demand.prefix) or m["id"] in mine]
    loaded = {m["id"] for m in models}
    out += [{"id": n, "kind": "adapter", "parent": base, "root": n} for n in sorted(mine - loaded)]
    return out


async def _ensure(request: Request, model: str) -> None:
    """An on-demand model: the project's own (else 404), loaded on first use."""
    state = request.app.state
    on_demand = getattr(state, "on_demand", None)
    if on_demand is None or not model.startswith(on_demand.prefix):
        return
    found = await run_in_threadpool(on_demand.find, model, request_project(request))
    if found is None:
        raise ModelNotFoundError(model, [m["id"] for m in await _visible(request)])
    await run_in_threadpool(state.served.load_on_demand, model, *found)


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {"object": "list", "data": [P.model_card(m, state.created) for m in await _visible(request)]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    state = request.app.state
    models = await _visible(request)
    for m in models:
        if m["id"] == model_id:
            return P.model_card(m, state.created)
    raise ModelNotFoundError(model_id, [m["id"] for m in models])


@router.post("/v1/chat/completions")
async def chat_completions(req: P.ChatCompletionRequest, request: Request):
    await _ensure(request, req.model)
    return _respond(await _completions(request).chat(req))


@router.post("/v1/completions")
async def completions(req: P.CompletionRequest, request: Request):
    await _ensure(request, req.model)
    return _respond(await _completions(request).text(req))
