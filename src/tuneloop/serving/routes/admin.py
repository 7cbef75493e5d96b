"""What the server serves: vLLM's adapter API (POST /v1/load_lora_adapter, /v1/unload_lora_adapter)
and tuneloop's own (POST /v1/load_inference_component, /v1/unload_inference_component,
/v1/replace_base_model). Each goes through `app.state.served` (served.py: weight policy, checks,
engine, and the record through the deployment service's `Deployment` interface) in a worker
thread, so loading weights never blocks the event loop."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from tuneloop.serving import protocol as P
from tuneloop.serving.routes.auth import require_admin
from tuneloop.serving.served import ServedModels

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_admin)])


def _served(request: Request) -> ServedModels:
    return request.app.state.served


@router.post("/v1/load_lora_adapter")
async def load_lora_adapter(req: P.LoadLoraAdapterRequest, request: Request):
    for warning in await run_in_threadpool(_served(request).load_adapter, req.lora_name, req.lora_path):
        log.warning("%s", warning)
    return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(req: P.UnloadLoraAdapterRequest, request: Request):
    await run_in_threadpool(_served(request).unload_adapter, req.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")


@router.post("/v1/load_inference_component")
async def load_inference_component(req: P.LoadModelRequest, request: Request) -> dict[str, Any]:
    root = await run_in_threadpool(_served(request).add_model, req.name, req.model_path)
    return {"name": req.name, "kind": "ic", "root": root}


@router.post("/v1/unload_inference_component")
async def unload_inference_component(req: P.UnloadModelRequest, request: Request) -> dict[str, Any]:
    await run_in_threadpool(_served(request).remove_model, req.name)
    return {"name": req.name, "removed": True}


@router.post("/v1/replace_base_model")
async def replace_base_model(req: P.LoadModelRequest, request: Request) -> dict[str, Any]:
    root, dropped = await run_in_threadpool(_served(request).replace_base, req.name, req.model_path)
    request.app.state.info["base"] = req.name  # what /health reports
    return {"base": req.name, "root": root, "dropped": dropped}
