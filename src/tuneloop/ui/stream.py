"""`/jobs/JOB_ID/stream`: the job's new events as server-sent events, one stream per job page.

The page is rendered with the events so far and opens this stream after the last one it holds
(`?after=ID`; a reconnecting EventSource sends `Last-Event-ID` instead). Each event goes out once,
with its id: `event: metrics` (data: the step's metrics), `event: message` (level, message, time);
`event: job` whenever state, step or loss change; `event: end` once the job has ended and every
event before the end was sent. The server reads the store every POLL_S seconds for this page; the
browser does not poll.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tuneloop.ui.jobs import ACTIVE, own_job, percent
from tuneloop.ui.render import ui, when

router = APIRouter()
POLL_S = 0.5


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def job_state(job: dict[str, Any]) -> dict[str, Any]:
    return {"state": job["state"], "step": job["step"], "total_steps": job["total_steps"], "loss": job["loss"],
            "percent": percent(job), "error": job["error"]}


def event_message(e: dict[str, Any]) -> str:
    if e["type"] == "metrics":
        return sse("metrics", e.get("data") or {}, e["id"])
    return sse("message", {"level": e["level"], "message": e["message"], "time": when(e["created_at"])}, e["id"])


@router.get("/jobs/{job_id}/stream")
async def job_stream(request: Request, job_id: str, after: int = 0):
    await run_in_threadpool(own_job, request, job_id)
    svc = ui(request).services.jobs
    last_id = request.headers.get("last-event-id", "")
    start = int(last_id) if last_id.isdigit() else after

    async def events() -> AsyncIterator[str]:
        last, shown = start, None
        yield "retry: 2000\n\n"
        while True:
            job = await run_in_threadpool(svc.get, job_id)       # read before the events: none is missed
            for e in await run_in_threadpool(svc.store.list_events, job_id, last):
                last = e["id"]
                yield event_message(e)
            state = job_state(job)
            if state != shown:
                shown = state
                yield sse("job", state)
            if job["state"] not in ACTIVE:
                yield sse("end", state)
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
