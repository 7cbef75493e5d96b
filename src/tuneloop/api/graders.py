"""POST /v1/fine_tuning/alpha/graders/validate and /run: OpenAI's grader JSON checked and run on
one sample by the rewards code (service/graders.py; python graders only in the rewards sandbox),
answered as the official client's GraderValidateResponse and GraderRunResponse.

    client.fine_tuning.alpha.graders.validate(grader={"type": "string_check", ...})
    client.fine_tuning.alpha.graders.run(grader=..., model_sample="Paris", item={"answer": "Paris"})
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from tuneloop.api.auth import project_dependency
from tuneloop.service.graders import GraderService

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", dependencies=[Depends(project_dependency)])
_lock = threading.Lock()


class ValidateBody(BaseModel):
    grader: Any


class RunBody(BaseModel):
    grader: Any
    model_sample: str
    item: Any = None


def graders(request: Request) -> GraderService:
    """The app's grader service (one sandbox pool per server), made on first use."""
    state = request.app.state
    with _lock:
        if getattr(state, "graders", None) is None:
            from tuneloop.settings import load_settings

            state.graders = GraderService(load_settings())
        return state.graders


@router.post("/validate")
def validate(body: ValidateBody, service: GraderService = Depends(graders)) -> dict[str, Any]:
    return service.validate(body.grader)


@router.post("/run")
def run(body: RunBody, service: GraderService = Depends(graders)) -> dict[str, Any]:
    return service.run(body.grader, body.model_sample, body.item)
