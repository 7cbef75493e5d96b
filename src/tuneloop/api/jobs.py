"""The fine-tuning jobs API: POST/GET /v1/fine_tuning/jobs, GET .../{id}, POST .../{id}/cancel,
POST .../{id}/pause and .../resume,
GET .../{id}/events (newest first), GET .../{id}/checkpoints; cursor paging with `after` and
`limit`, `metadata[k]=v` filters on the list; `Idempotency-Key` makes a retried create return
the first job. Each project sees only its own jobs.

The list and retrieve, the API's hottest reads, run on the event loop when the store is SQLite
(`read`): a read of the local WAL database never waits for a writer and costs less than the hop
to the thread pool it used to take (on PostgreSQL, a network round trip, they keep the hop).
Whatever writes (create, cancel, pause, resume) or reads more (events, checkpoints' folders) runs
in the thread pool.

    client.fine_tuning.jobs.create(model="tuneloop/tiny-qwen3", training_file=f.id)
"""

from __future__ import annotations

from typing import Optional

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from tuneloop.api.auth import Project
from tuneloop.errors import ValidationError
from tuneloop.service.finetuning import FineTuningService



class JSON(Response):
    """The objects are plain JSON already (shaped by the service): serialized once, by orjson,
    without FastAPI's per-field encoding (the list and retrieve paths are the API's hottest)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def reader(svc: FineTuningService):
    """`await read(fn, *args)`: fn(*args) on the loop for a SQLite store, else in the thread pool."""
    if svc.store.engine.dialect.name == "sqlite":
        async def read(fn, *args):
            return fn(*args)
    else:
        async def read(fn, *args):
            return await run_in_threadpool(fn, *args)
    return read


def jobs_router(svc: FineTuningService) -> APIRouter:
    router = APIRouter(prefix="/v1/fine_tuning/jobs", default_response_class=JSON)
    read = reader(svc)

    @router.post("")
    async def create(request: Request, project: Project) -> JSON:
        try:
            body = await request.json()
        except ValueError:
            raise ValidationError("The request body is not JSON.", param="body") from None
        if not isinstance(body, dict):
            raise ValidationError("The request body must be a JSON object.", param="body")
        key = request.headers.get("idempotency-key")
        return JSON(await run_in_threadpool(svc.create, project, body, key))

    @router.get("")
    async def list_jobs(request: Request, project: Project, after: Optional[str] = None,
                        limit: int = 20) -> JSON:
        metadata = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
                    if k.startswith("metadata[") and k.endswith("]")}
        return JSON(await read(svc.list, project, after, limit, metadata or None))

    @router.get("/{job_id}")
    async def retrieve(job_id: str, project: Project) -> JSON:
        return JSON(await read(svc.retrieve, project, job_id))

    @router.post("/{job_id}/cancel")
    def cancel(job_id: str, project: Project) -> JSON:
        return JSON(svc.cancel(project, job_id))

    @router.post("/{job_id}/pause")
    def pause(job_id: str, project: Project) -> JSON:
        return JSON(svc.pause(project, job_id))

    @router.post("/{job_id}/resume")
    def resume(job_id: str, project: Project) -> JSON:
        return JSON(svc.resume(project, job_id))

    @router.get("/{job_id}/events")
    def events(job_id: str, project: Project, after: Optional[str] = None, limit: int = 20) -> JSON:
        return JSON(svc.events(project, job_id, after, limit))

    @router.get("/{job_id}/checkpoints")
    def checkpoints(job_id: str, project: Project, after: Optional[str] = None,
                    limit: int = 10) -> JSON:
        return JSON(svc.checkpoints(project, job_id, after, limit))

    return router
