"""GET /health: the server's pid and project (what `tuneloop deployment` matches against the
recorded server), its engine, how many models it serves, and the batching statistics."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {"status": "ok", "pid": os.getpid(), **state.info, "engine": state.engine.kind,
            "models": len(state.engine.models()), "batching": state.engine.stats()}
