"""The overview pages: `/` (where things stand, what to do next), `/playground` (a question to the
base and a tuned model side by side, through the project's running `tuneloop serve`; the page's
script streams both answers through `/playground/stream`, the form works without it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import TuneloopError
from tuneloop.ui.render import render, ui, viewer

router = APIRouter()


@router.get("/")
def home(request: Request):
    services, project = ui(request).services, viewer(request).project
    return render(request, "home.html", jobs=services.store.find_jobs(project, limit=5),
                  datasets=services.datasets.list(), packages=services.store.list_packages(project=project))


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
        tuned = [m["id"] for m in served if m["id"] != base]
        model = model if model in tuned else (tuned[-1] if tuned else base)
        ctx |= {"base_model": base, "tuned": tuned, "model": model}
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
