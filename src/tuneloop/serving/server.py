"""tuneloop serve: the OpenAI-compatible server (FastAPI + uvicorn) over an engine.

    tuneloop serve [--model BASE] [--host 127.0.0.1] [--port 8000] [--api-key KEY]

`create_app` builds the app after vLLM's entrypoints: the serving objects go on `app.state`
(engine, `completions` for the OpenAI routes, `served` for the admin routes, limits, info), the
routers of routes/ are included (health, openai, admin), every error is answered as an OpenAI
error body by protocol.error_response, and request bodies are capped (limits.BodyLimit). `run`
picks the engine, loads the base and what the deployment records, and runs uvicorn (or `vllm
serve`); the deployment service (service/deployments.py, `DeploymentService.serve`) decides the
base and passes itself as the `Deployment` (served.py) that every change to what is served is
recorded through, so a restart serves the same. Nothing here opens the store.
What a request may cost is bounded (limits.py) and the weights a request names must lie under
the server's model roots (weights.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tuneloop.errors import TuneloopError
from tuneloop.serving import protocol as P
from tuneloop.serving.adapters import check_adapter
from tuneloop.serving.completions import DEFAULT_MAX_TOKENS, Completions
from tuneloop.serving.engine import BaseModel, GeneratingEngine, choose_engine
from tuneloop.serving.limits import BodyLimit, Limits
from tuneloop.serving.routes import admin, health, openai
from tuneloop.serving.routes.auth import KeyCheck
from tuneloop.serving.served import Deployment, OnDemand, ServedModels
from tuneloop.serving.vllm_engine import VLLMEngine
from tuneloop.serving.weights import WeightPolicy


@dataclass
class Extensions:
    """What an edge adds to the server (`tuneloop serve`: the fine-tuning API, api/): its routers,
    the models made on demand (`ft:`), work run in threads while the server runs (each is called
    with a threading.Event set at shutdown), the POST paths whose bodies the routes stream
    themselves under their own limit (uploads), and sub-apps mounted at a path (the web UI at /ui)."""

    routers: list[Any] = field(default_factory=list)
    mounts: list[tuple[str, Any]] = field(default_factory=list)
    on_demand: OnDemand | None = None
    background: list[Callable[[threading.Event], None]] = field(default_factory=list)
    streamed: tuple[str, ...] = ()


def create_app(engine: GeneratingEngine, *, deployment: Deployment | None = None,
               api_key: str | None = None, info: dict[str, Any] | None = None,
               default_max_tokens: int = DEFAULT_MAX_TOKENS, on_ready: Callable[[], None] | None = None,
               limits: Limits = Limits(), weights: WeightPolicy | None = None,
               keys: KeyCheck | None = None, extensions: Extensions | None = None) -> FastAPI:
    """The app serving `engine`; with `deployment`, what the admin routes change is recorded; with
    `keys`, the database's project keys are accepted besides `api_key` (routes/auth.py)."""
    ext = extensions or Extensions()

    @asynccontextmanager
    async def lifespan(_app):
        stop = threading.Event()
        threads = [threading.Thread(target=work, args=(stop,), daemon=True) for work in ext.background]
        for t in threads:
            t.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            stop.set()

    app = FastAPI(title="tuneloop", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.completions = Completions(engine, default_max_tokens=default_max_tokens, limits=limits)
    app.state.served = ServedModels(engine, deployment, weights)
    app.state.limits = limits
    app.state.api_key = api_key
    app.state.keys = keys
    app.state.info = dict(info or {})
    app.state.created = int(time.time())
    app.state.on_demand = ext.on_demand
    for router in (health.router, openai.router, admin.router, *ext.routers):
        app.include_router(router)
    for path, sub in ext.mounts:
        app.mount(path, sub)
    # TuneloopError through the ExceptionMiddleware (no traceback: a user error); Exception last
    for exc_class in (TuneloopError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(exc_class, _error)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes, streamed=ext.streamed)
    return app


async def _error(_request: Request, exc: Exception) -> JSONResponse:
    status, body = P.error_response(exc)
    return JSONResponse(body, status_code=status)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run(deployment: Deployment, name: str, path: str, deployed: list[dict[str, Any]], *, host: str, port: int,
        api_key: str | None, weights: WeightPolicy, engine_kind: str = "auto", max_batch: int = 32,
        batch_window_ms: float = 10.0, default_max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None,
        limits: Limits = Limits(), keys: KeyCheck | None = None, extensions: Extensions | None = None,
        say: Callable[[str], None] = print) -> int:
    """Serve base `name` (loaded from `path`) and the `deployed` records until interrupted, recording
    through `deployment`; returns the exit code."""
    kind = choose_engine(engine_kind)
    base = BaseModel(name, path)
    if kind == "vllm":
        if keys is not None and keys.required():
            say("⚠️  vLLM checks only --api-key: the keys from `tuneloop keys create` are not accepted by it.")
        if extensions is not None and extensions.routers:
            say("⚠️  vLLM serves the inference API only: the fine-tuning API needs --engine transformers.")
        return _serve_vllm(deployment, base, deployed, host, port, api_key, say)

    from tuneloop.serving.hf_engine import TransformersEngine  # torch and transformers load here

    say(f"Loading {name} ...")
    engine = TransformersEngine(base, max_batch=max_batch, batch_window_ms=batch_window_ms, threads=threads)
    try:
        info = {"project": deployment.project, "base": name}
        pid = os.getpid()

        def ready() -> None:
            required = api_key is not None or (keys is not None and keys.required())
            deployment.record_server(host, port, pid, "transformers", required)
            say(f"Serving {engine.base.name} and {len(engine.models()) - 1} more model(s) at http://{host}:{port}/v1 "
                f"(OpenAI-compatible; pid {pid}). Ctrl-C stops.")

        app = create_app(engine, deployment=deployment, api_key=api_key, info=info,
                         default_max_tokens=default_max_tokens, on_ready=ready, limits=limits, weights=weights,
                         keys=keys, extensions=extensions)
        app.state.served.restore(deployed, say)
        return _run_uvicorn(app, deployment, host, port)
    finally:
        engine.close()


def _run_uvicorn(app, deployment: Deployment, host: str, port: int) -> int:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        deployment.clear_server(os.getpid())
    return 0 if server.started else 1


def _serve_vllm(deployment: Deployment, base: BaseModel, deployed: list[dict[str, Any]], host: str, port: int,
                api_key: str | None, say: Callable[[str], None]) -> int:
    adapters = {d["name"]: d["path"] for d in deployed if d["kind"] == "adapter"}
    for d in deployed:
        if d["kind"] == "ic":
            say(f"⚠️  Not serving inference component {d['name']}: vLLM serves one model per server.")
    ranks = [check_adapter(p, base_name=base.name, base_folder=None).rank for p in adapters.values()]
    engine = VLLMEngine(base, host=host, port=port, api_key=api_key, adapters=adapters,
                        max_lora_rank=max(ranks + [64]))
    say("Starting: " + " ".join(engine.cmd))
    pid = engine.start()
    try:
        engine.wait_ready()
        deployment.record_server(host, port, pid, "vllm", api_key is not None)
        say(f"Serving {base.name} with vLLM at http://{host}:{port}/v1 (pid {pid}). Ctrl-C stops.")
        return engine.proc.wait()
    finally:
        engine.close()
        deployment.clear_server(pid)
