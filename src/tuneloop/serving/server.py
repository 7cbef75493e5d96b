"""tuneloop serve: the OpenAI-compatible server (FastAPI + uvicorn) over an engine.

    tuneloop serve [--model BASE] [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Routes: GET /health (pid, project, batching statistics), GET /openapi.json, GET /v1/models, GET /v1/models/{id},
POST /v1/chat/completions and /v1/completions (plain and SSE streaming), the vLLM adapter API
POST /v1/load_lora_adapter and /v1/unload_lora_adapter, and tuneloop's own
POST /v1/load_inference_component, /v1/unload_inference_component, /v1/replace_base_model.
Every change to what is served is written to the deployment state, so a restart serves the same.
What a request may cost is bounded (limits.py: body bytes, prompt length, tokens to generate) and
the weights a request names must lie under the server's model roots (weights.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import time
from pathlib import Path
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tuneloop.errors import AuthenticationError, ConflictError, ModelNotFoundError, TuneloopError, ValidationError
from tuneloop.serving.adapters import check_adapter, check_full_model, localize
from tuneloop.serving.deployments import DeploymentService, Source
from tuneloop.serving.engine import BaseModel, GeneratingEngine
from tuneloop.serving.limits import BodyLimit, Limits, check_prompt_chars
from tuneloop.serving.weights import WeightPolicy
from tuneloop.serving import protocol as P

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 256


class Answer:
    """Events of one submitted request, moved from the engine's thread onto the event loop."""

    def __init__(self, engine: GeneratingEngine, model: str, prompts: list[list[int]], params) -> None:
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


def _sse(body: dict[str, Any] | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"


def create_app(engine: GeneratingEngine, *, deployments: DeploymentService | None = None,
               api_key: str | None = None, info: dict[str, Any] | None = None,
               default_max_tokens: int = DEFAULT_MAX_TOKENS, on_ready: Callable[[], None] | None = None,
               limits: Limits = Limits(), weights: WeightPolicy | None = None):
    if weights is None:
        from tuneloop.settings import load_settings

        weights = WeightPolicy.configured(load_settings(), allow_file=deployments.allow_file if deployments else None)

    @asynccontextmanager
    async def lifespan(_app):
        if on_ready is not None:
            on_ready()
        yield

    app = FastAPI(title="tuneloop", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)
    created = int(time.time())
    info = dict(info or {})

    async def _error(_request: Request, exc: Exception) -> JSONResponse:
        status, body = P.error_response(exc)
        return JSONResponse(body, status_code=status)

    # TuneloopError through the ExceptionMiddleware (no traceback: a user error); Exception last
    for exc_class in (TuneloopError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(exc_class, _error)

    def auth(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise AuthenticationError("Incorrect API key provided.",
                                      hint="Send it as `Authorization: Bearer KEY` (the openai client's api_key).")

    guarded = [Depends(auth)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pid": os.getpid(), **info, "engine": engine.kind,
                "models": len(engine.models()), "batching": engine.stats()}

    @app.get("/v1/models", dependencies=guarded)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [P.model_card(m, created) for m in engine.models()]}

    @app.get("/v1/models/{model_id:path}", dependencies=guarded)
    async def get_model(model_id: str) -> dict[str, Any]:
        for m in engine.models():
            if m["id"] == model_id:
                return P.model_card(m, created)
        raise ModelNotFoundError(model_id, [m["id"] for m in engine.models()])

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(req: P.ChatCompletionRequest):
        req.check_unsupported()
        context = engine.context_length(req.model)
        check_prompt_chars(req.prompt_chars(), context, "messages")
        ids = engine.encode(req.model, messages=req.chat())
        params = req.sampling(len(ids), context, default_max_tokens, budget=limits.token_budget(context))
        answer = Answer(engine, req.model, [ids], params)
        rid = P.new_id("chatcmpl")
        if not req.stream:
            texts, reasons, tokens = await answer.collect()
            return P.chat_response(rid, req.model, texts, reasons, P.usage(len(ids), tokens))
        return StreamingResponse(_chat_stream(answer, rid, req, len(ids)), media_type="text/event-stream")

    async def _chat_stream(answer: Answer, rid: str, req: P.ChatCompletionRequest, prompt_tokens: int):
        now, tokens = int(time.time()), 0
        for i in range(answer.choices):
            yield _sse(P.chat_chunk(rid, req.model, now, i, {"role": "assistant", "content": ""}))
        try:
            async for kind, index, value in answer.events():
                if kind == "text":
                    if value:
                        yield _sse(P.chat_chunk(rid, req.model, now, index, {"content": value}))
                else:
                    reason, n = value
                    tokens += n
                    yield _sse(P.chat_chunk(rid, req.model, now, index, {}, reason))
        except Exception as e:  # the engine failed after the response started: report it in-stream
            yield _sse(P.error_response(e)[1])
        if req.include_usage:
            yield _sse(P.chat_chunk(rid, req.model, now, None, None, use=P.usage(prompt_tokens, tokens)))
        yield _sse("[DONE]")

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(req: P.CompletionRequest):
        req.check_unsupported()
        context = engine.context_length(req.model)
        check_prompt_chars(req.prompt_chars(), context, "prompt")
        prompts = [engine.encode(req.model, text=p) for p in req.prompts()]
        if not all(prompts):
            raise ValidationError("`prompt` must not be empty.", param="prompt")
        params = req.sampling(max(map(len, prompts)), context, default_max_tokens, "prompt", prompts=len(prompts),
                              budget=limits.token_budget(context))
        answer = Answer(engine, req.model, prompts, params)
        rid, prompt_tokens = P.new_id("cmpl"), sum(map(len, prompts))
        if not req.stream:
            texts, reasons, tokens = await answer.collect()
            return P.completion_response(rid, req.model, texts, reasons, P.usage(prompt_tokens, tokens))
        return StreamingResponse(_completion_stream(answer, rid, req, prompt_tokens), media_type="text/event-stream")

    async def _completion_stream(answer: Answer, rid: str, req: P.CompletionRequest, prompt_tokens: int):
        now, tokens = int(time.time()), 0
        try:
            async for kind, index, value in answer.events():
                if kind == "text":
                    if value:
                        yield _sse(P.completion_chunk(rid, req.model, now, index, value))
                else:
                    reason, n = value
                    tokens += n
                    yield _sse(P.completion_chunk(rid, req.model, now, index, "", reason))
        except Exception as e:
            yield _sse(P.error_response(e)[1])
        if req.include_usage:
            yield _sse(P.completion_chunk(rid, req.model, now, None, "", use=P.usage(prompt_tokens, tokens)))
        yield _sse("[DONE]")

    # ---- what is served: vLLM's adapter API and tuneloop's own ------------------------------
    # Each change is checked, applied to the engine and recorded in a worker thread: reading
    # folders (or fetching URLs) and loading weights never block the event loop. The path a
    # request names must first pass the weight policy (under a model root; URLs only if allowed).
    def _source(path: str, param: str) -> Source:
        path = weights.check(path, param)
        folder = localize(path, deployments.cache_dir) if deployments else Path(path)
        folder = folder.resolve() if folder.exists() else folder
        lineage = deployments._lineage(folder) if deployments else (None, None, None)
        return Source(folder, path, *lineage)

    def _load_adapter(name: str, path: str) -> list[str]:
        src = _source(path, "lora_path")
        base = Path(engine.base.path)
        check = check_adapter(src.path, base_name=engine.base.name, base_folder=base if base.is_dir() else None)
        engine.load_adapter(name, str(src.path))
        if deployments:
            deployments.record(name, "adapter", src, base_model=check.base_model)
        return check.warnings

    def _add_model(name: str, path: str) -> str:
        src = _source(path, "model_path")
        check_full_model(src.path)
        engine.add_model(name, str(src.path))
        if deployments:
            deployments.record(name, "ic", src)
        return str(src.path)

    def _replace_base(name: str, path: str) -> tuple[str, list[str]]:
        src = _source(path, "model_path")
        check_full_model(src.path)
        dropped = engine.replace_base(BaseModel(name, str(src.path)))
        if deployments:
            deployments.store.upsert_deployment(deployments.project, base_model=name, base_path=str(src.path),
                                                base_job_id=src.job_id, base_group=src.group, base_version=src.version)
        return str(src.path), dropped

    def _forget(name: str) -> None:
        if deployments:
            deployments.store.delete_deployed(deployments.project, name)

    @app.post("/v1/load_lora_adapter", dependencies=guarded)
    async def load_lora_adapter(req: P.LoadLoraAdapterRequest):
        for warning in await run_in_threadpool(_load_adapter, req.lora_name, req.lora_path):
            log.warning("%s", warning)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=guarded)
    async def unload_lora_adapter(req: P.UnloadLoraAdapterRequest):
        await run_in_threadpool(engine.unload_adapter, req.lora_name)
        await run_in_threadpool(_forget, req.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    @app.post("/v1/load_inference_component", dependencies=guarded)
    async def load_inference_component(req: P.LoadModelRequest) -> dict[str, Any]:
        root = await run_in_threadpool(_add_model, req.name, req.model_path)
        return {"name": req.name, "kind": "ic", "root": root}

    @app.post("/v1/unload_inference_component", dependencies=guarded)
    async def unload_inference_component(req: P.UnloadModelRequest) -> dict[str, Any]:
        await run_in_threadpool(engine.remove_model, req.name)
        await run_in_threadpool(_forget, req.name)
        return {"name": req.name, "removed": True}

    @app.post("/v1/replace_base_model", dependencies=guarded)
    async def replace_base_model(req: P.LoadModelRequest) -> dict[str, Any]:
        root, dropped = await run_in_threadpool(_replace_base, req.name, req.model_path)
        info["base"] = req.name
        return {"base": req.name, "root": root, "dropped": dropped}

    return app


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
        _restore(engine, deps, deployed, say)
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
        return _run_uvicorn(app, deps, host, port)
    finally:
        engine.close()


def _restore(engine: GeneratingEngine, deps: DeploymentService, deployed: list[dict[str, Any]],
             say: Callable[[str], None]) -> None:
    """Load what the deployment state lists; what no longer loads is reported and skipped."""
    base_folder = Path(engine.base.path) if Path(engine.base.path).is_dir() else None
    for d in deployed:
        try:
            if d["kind"] == "adapter":
                info = check_adapter(d["path"], base_name=engine.base.name, base_folder=base_folder)
                engine.load_adapter(d["name"], d["path"])
                for w in info.warnings:
                    say(w)
            else:
                check_full_model(d["path"])
                engine.add_model(d["name"], d["path"])
            say(f"  {'adapter' if d['kind'] == 'adapter' else 'inference component'} {d['name']} <- {d['path']}")
        except TuneloopError as e:
            say(f"⚠️  Not serving {d['name']}: {e.message}")
        except Exception as e:  # noqa: BLE001 - one broken record must not stop the server
            say(f"⚠️  Not serving {d['name']}: {type(e).__name__}: {e}")


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
