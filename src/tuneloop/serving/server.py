"""tuneloop serve: the OpenAI-compatible server (FastAPI + uvicorn) over an engine.

    tuneloop serve [--model BASE] [--host 127.0.0.1] [--port 8000] [--api-key KEY]

`create_app` builds the app after vLLM's entrypoints: the serving objects go on `app.state`
(engine, `completions` for the OpenAI routes, `served` for the admin routes, limits, info), the
routers of routes/ are included (health, openai, admin), every error is answered as an OpenAI
error body by protocol.error_response, and request bodies are capped (limits.BodyLimit). `serve`
picks the engine, loads what the deployment state records, and runs uvicorn (or `vllm serve`).
Every change to what is served is written to the deployment state, so a restart serves the same.
What a request may cost is bounded (limits.py) and the weights a request names must lie under
the server's model roots (weights.py).
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tuneloop.errors import ConflictError, TuneloopError, ValidationError
from tuneloop.serving import protocol as P
from tuneloop.serving.adapters import check_adapter
from tuneloop.serving.completions import DEFAULT_MAX_TOKENS, Completions
from tuneloop.serving.deployments import DeploymentService
from tuneloop.serving.engine import BaseModel, GeneratingEngine
from tuneloop.serving.limits import BodyLimit, Limits
from tuneloop.serving.routes import admin, health, openai
from tuneloop.serving.served import ServedModels
from tuneloop.serving.weights import WeightPolicy


def create_app(engine: GeneratingEngine, *, deployments: DeploymentService | None = None,
               api_key: str | None = None, info: dict[str, Any] | None = None,
               default_max_tokens: int = DEFAULT_MAX_TOKENS, on_ready: Callable[[], None] | None = None,
               limits: Limits = Limits(), weights: WeightPolicy | None = None) -> FastAPI:
    """The app serving `engine`; with `deployments`, what the admin routes change is recorded."""

    @asynccontextmanager
    async def lifespan(_app):
        if on_ready is not None:
            on_ready()
        yield

    app = FastAPI(title="tuneloop", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.completions = Completions(engine, default_max_tokens=default_max_tokens, limits=limits)
    app.state.served = ServedModels(engine, deployments, weights)
    app.state.limits = limits
    app.state.api_key = api_key
    app.state.info = dict(info or {})
    app.state.created = int(time.time())
    for router in (health.router, openai.router, admin.router):
        app.include_router(router)
    # TuneloopError through the ExceptionMiddleware (no traceback: a user error); Exception last
    for exc_class in (TuneloopError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(exc_class, _error)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
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


def serve(deps: DeploymentService, *, model: str | None, host: str, port: int, api_key: str | None,
          engine_kind: str = "auto", max_batch: int = 32, batch_window_ms: float = 10.0,
          default_max_tokens: int = DEFAULT_MAX_TOKENS, threads: int | None = None,
          limits: Limits = Limits(), model_roots: tuple[str, ...] = (), allow_remote_weights: bool = False,
          say: Callable[[str], None] = print) -> int:
    """Serve the project's deployment until interrupted; returns the exit code."""
    from tuneloop.serving.engine import choose_engine

    running = deps.running_server()
    if running is not None:
        raise ConflictError(f"A server for project {deps.project!r} already runs at {running.url} "
                            f"(pid {running.pid}).", hint="Stop it first, or serve another project (--project).")
    if not port_free(host, port):
        raise ValidationError(f"Port {port} on {host} is in use.", hint="Pick another with --port.", param="port")
    kind = choose_engine(engine_kind)
    row = deps.store.get_deployment(deps.project)
    if model and (row is None or model != row["base_model"]):
        name, path = deps.set_base(model)  # a new base for the deployment (no lineage)
    else:  # the recorded base (lineage kept), or the default model
        name, path = deps.resolve_base(row["base_model"] if row else deps.default_base())
        deps.store.upsert_deployment(deps.project, base_model=name, base_path=path)
    base = BaseModel(name, path)
    deployed = deps.store.list_deployed(deps.project)
    if kind == "vllm":
        return _serve_vllm(deps, base, deployed, host, port, api_key, say)

    from tuneloop.serving.hf_engine import TransformersEngine

    say(f"Loading {name} ...")
    engine = TransformersEngine(base, max_batch=max_batch, batch_window_ms=batch_window_ms, threads=threads)
    try:
        info = {"project": deps.project, "base": name}
        pid = os.getpid()

        def ready() -> None:
            deps.record_server(host, port, pid, "transformers", api_key is not None)
            say(f"Serving {engine.base.name} and {len(engine.models()) - 1} more model(s) at http://{host}:{port}/v1 "
                f"(OpenAI-compatible; pid {pid}). Ctrl-C stops.")

        weights = WeightPolicy.configured(deps.settings, roots=model_roots, allow_remote=allow_remote_weights,
                                          allow_file=deps.allow_file)
        app = create_app(engine, deployments=deps, api_key=api_key, info=info, default_max_tokens=default_max_tokens,
                         on_ready=ready, limits=limits, weights=weights)
        app.state.served.restore(deployed, say)
        return _run_uvicorn(app, deps, host, port)
    finally:
        engine.close()


def _run_uvicorn(app, deps: DeploymentService, host: str, port: int) -> int:
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        deps.clear_server(os.getpid())
    return 0 if server.started else 1


def _serve_vllm(deps: DeploymentService, base: BaseModel, deployed: list[dict[str, Any]], host: str, port: int,
                api_key: str | None, say: Callable[[str], None]) -> int:
    from tuneloop.serving.vllm_engine import VLLMEngine

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
        deps.record_server(host, port, pid, "vllm", api_key is not None)
        say(f"Serving {base.name} with vLLM at http://{host}:{port}/v1 (pid {pid}). Ctrl-C stops.")
        return engine.proc.wait()
    finally:
        engine.close()
        deps.clear_server(pid)
