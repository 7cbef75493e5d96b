"""`/registry`: registered versions with their lineage, metrics and exports; per version a Deploy
button (the deployment service's `add_adapter` for an adapter, `add_ic` for a full model, from
the version's output folder: what `tuneloop adapter add NAME --weights DIR` / `tuneloop add-ic
NAME --model-data DIR` do, hot-loaded into the project's running `tuneloop serve`, else recorded
for the next one) and an Export form (service/exports.py's `export`, as `tuneloop export
GROUP@vN --format F --output DIR` does, recorded as the version's artifact)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import NotFoundError, TuneloopError, ValidationError
from tuneloop.export import FORMATS
from tuneloop.export.gguf_writer import QUANTS
from tuneloop.service.exports import export
from tuneloop.ui.render import render, ui, viewer

router = APIRouter()
SHOWN_METRICS = ("train_loss", "final_loss", "eval_loss", "eval_exact_match", "final_reward", "eval_reward",
                 "final_rewards/accuracies", "eval_rewards/accuracies", "train_runtime")


def serve_name(p: dict[str, Any], project: str) -> str:
    """The name clients would send as `model`: the group without its project prefix, and the version."""
    group = p["group_name"].removeprefix(f"{project}-")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{group}-v{p['version']}")


def _context(request: Request, **extra: Any) -> dict[str, Any]:
    services, project = ui(request).services, viewer(request).project
    store = services.store
    exports: dict[tuple[str, int], list[dict]] = {}
    for a in store.list_artifacts(None):
        exports.setdefault((a["group_name"], a["version"]), []).append(a)
    deps = services.deployments(project, viewer(request).api_key)
    deployed = {d["path"]: d["name"] for d in deps.deployed()}
    packages = [p | {"artifacts": exports.get((p["group_name"], p["version"]), []), "serve_name": serve_name(p, project),
                     "deployed_as": deployed.get(p["output_path"]),
                     "export_name": serve_name(p, project),
                     "shown": {k: v for k, v in (p.get("metrics") or {}).items()
                               if k in SHOWN_METRICS and isinstance(v, (int, float))}}
                for p in store.list_packages(project=project)]
    try:
        server = deps.running_server()
    except TuneloopError:
        server = None
    return {"packages": packages, "server": server, "project": project, "formats": FORMATS, "quants": QUANTS,
            "exports_dir": exports_dir(request)} | extra


def exports_dir(request: Request) -> Path:
    """Where the UI's exports go: a viewer names a folder in it, never a path elsewhere on this machine."""
    return Path(ui(request).services.settings.home) / "exports"


def _package(request: Request, group: str, version: int) -> dict[str, Any]:
    for p in ui(request).services.store.list_packages(group, project=viewer(request).project):
        if p["version"] == version:
            return p
    raise NotFoundError(f"No registered version {group} v{version} in this project.",
                        hint="See the registered versions on the Registry page.")


@router.get("/registry")
def registry(request: Request):
    return render(request, "registry.html", **_context(request))


def _deploy(request: Request, group: str, version: int, name: str) -> dict[str, Any]:
    try:
        p = _package(request, group, version)
        deps = ui(request).services.deployments(viewer(request).project, viewer(request).api_key)
        if p["output_type"] == "adapter":
            change = deps.add_adapter(name, weights=p["output_path"])
        else:
            change = deps.add_ic(name, model_data=p["output_path"])
    except TuneloopError as e:
        return _context(request, error=e, error_title=f"Could not deploy {group} v{version}")
    what = "Adapter" if change.kind == "adapter" else "Inference component"
    where = ("loaded into the running server: ask it in the playground" if change.loaded else
             "recorded; the next `tuneloop serve` serves it")
    return _context(request, notice=f"{what} {change.name} deployed from {group} v{version} ({where}).",
                    warnings=change.warnings)


@router.post("/registry/deploy")
async def deploy(request: Request, group: str = Form(...), version: int = Form(...), name: str = Form(...)):
    ctx = await run_in_threadpool(_deploy, request, group, version, name.strip())
    return render(request, "registry.html", 400 if "error" in ctx else 200, **ctx)


def _export(request: Request, group: str, version: int, fmt: str, folder: str, quant: str | None,
            verify: bool) -> dict[str, Any]:
    try:
        _package(request, group, version)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", folder):
            raise ValidationError(f"{folder!r} is not a folder name.", param="output",
                                  hint="Use letters, digits, '.', '_' and '-' (the folder is made under "
                                       f"{exports_dir(request)}); for another place run tuneloop export ... --output DIR.")
        result, artifact = export(ui(request).services.store, f"{group}@v{version}", fmt, exports_dir(request) / folder,
                                  quant=quant, verify=verify, project=viewer(request).project)
    except TuneloopError as e:
        return _context(request, error=e, error_title=f"Could not export {group} v{version}")
    checked = f"; verified: {result.verify.summary()}" if result.verify is not None else ""
    return _context(request, notice=f"{fmt}{f' ({result.quant})' if result.quant else ''} export of {group} v{version}: "
                                    f"{result.output}{checked}.", warnings=list(result.notes))


@router.post("/registry/export")
async def export_version(request: Request, group: str = Form(...), version: int = Form(...),
                         format: str = Form(...), output: str = Form(...), quant: str = Form(""),
                         verify: str = Form("")):
    ctx = await run_in_threadpool(_export, request, group, version, format, output.strip(), quant or None,
                                  verify == "on")
    return render(request, "registry.html", 400 if "error" in ctx else 200, **ctx)
