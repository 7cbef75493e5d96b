"""`/playground`: one question to the base model and to any other model the project's running
`tuneloop serve` serves (its `/v1/models`: adapters, inference components), answers side by side.

Without script the form posts and the page comes back with both greedy answers (the deployment
service's `ask`). With script (`static/playground.js`) the page opens two `fetch` streams to
`/playground/stream`, which relays the server's `/v1/chat/completions` with `stream: true` (its
server-sent events, unchanged) from the server URL and with the headers the deployment service
gives, so both answers appear as they are generated.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Form, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.background import BackgroundTask

from tuneloop.errors import TuneloopError
from tuneloop.ui.render import render, ui, viewer

router = APIRouter()


def _playground(request: Request, question: str = "", model: str | None = None, max_tokens: int = 64,
                ask: bool = False) -> dict[str, Any]:
    """The running server, what it serves, and (when asked) both answers; errors shown in place."""
    who = viewer(request)
    deps = ui(request).services.deployments(who.project, who.api_key)
    ctx: dict[str, Any] = {"project": who.project, "question": question, "max_tokens": max_tokens, "server": None}
    try:
        server = deps.running_server()
        if server is None:
            return ctx
        ctx["server"] = server
        served = deps.served_models(server)
        base = next((m["id"] for m in served if m.get("parent") is None and m.get("kind", "base") == "base"),
                    served[0]["id"] if served else None)
        kinds = {m["id"]: m.get("kind", "model") for m in served}
        tuned = [m["id"] for m in served if m["id"] != base]
        model = model if model in tuned else (tuned[-1] if tuned else base)
        ctx |= {"base_model": base, "tuned": tuned, "kinds": kinds, "model": model}
        if ask and question.strip():
            ctx["answers"] = {base: deps.ask(server, base, [question], max_tokens)[0]}
            if model != base:
                ctx["answers"][model] = deps.ask(server, model, [question], max_tokens)[0]
    except TuneloopError as e:
        ctx["error"] = e
    return ctx


@router.get("/playground")
def playground(request: Request):
    return render(request, "playground.html", **_playground(request))


@router.post("/playground")
async def playground_ask(request: Request, question: str = Form(""), model: str = Form(""),
                         max_tokens: int = Form(64)):
    ctx = await run_in_threadpool(_playground, request, question, model or None, max(1, min(max_tokens, 1024)), True)
    return render(request, "playground.html", **ctx)


def _target(request: Request) -> tuple[str, dict[str, str]]:
    """The running server's chat URL and the headers to call it with (the viewer's key)."""
    who = viewer(request)
    deps = ui(request).services.deployments(who.project, who.api_key)
    server = deps.require_server()
    return server.url + "/v1/chat/completions", deps.headers(server)


@router.post("/playground/stream")
async def playground_stream(request: Request, question: str = Form(...), model: str = Form(...),
                            max_tokens: int = Form(64)):
    """The server's SSE stream of `model`'s greedy answer to `question`, relayed as it comes.
    A refusal before the stream starts (no server, a wrong key, an unknown model) is a plain-text
    answer with the server's status and message."""
    target, headers = await run_in_threadpool(_target, request)
    body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max(1, min(max_tokens, 1024)), "stream": True}
    client = httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10))
    try:
        upstream = await client.send(client.build_request("POST", target, json=body, headers=headers), stream=True)
    except httpx.HTTPError as e:
        await client.aclose()
        return PlainTextResponse(f"The server did not answer: {e}", status_code=502)
    if upstream.status_code >= 400:
        text = (await upstream.aread()).decode(errors="replace")
        await upstream.aclose()
        await client.aclose()
        try:
            text = httpx.Response(upstream.status_code, content=text).json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        return PlainTextResponse(f"Server: {text}", status_code=upstream.status_code)

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    return StreamingResponse(upstream.aiter_raw(), media_type="text/event-stream", background=BackgroundTask(close),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
