"""Datasets: `/datasets` lists the registered datasets and their versions and takes an upload
(multipart), staged by the dataset service like `tuneloop datasets create`: every bad line is
reported with its line number and the fix, and nothing is stored until the whole file is valid."""

from __future__ import annotations

import re
import shutil
import uuid
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from tuneloop.catalog import TECHNIQUES
from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.ui.render import render, ui

router = APIRouter()
CHUNK = 1 << 20


def _listing(request: Request) -> list[dict[str, Any]]:
    assets = ui(request).services.datasets
    return [d | {"all": assets.versions(d["name"])} for d in assets.list()]


def _page(request: Request, status_code: int = 200, **ctx: Any):
    return render(request, "datasets.html", status_code, datasets=_listing(request), techniques=TECHNIQUES, **ctx)


@router.get("/datasets")
def datasets_page(request: Request):
    return _page(request)


def safe_filename(name: str | None) -> str:
    """The upload's own file name (its messages say `train.jsonl:2`), without any folder."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return base or "upload.jsonl"


@router.post("/datasets")
async def upload(request: Request, file: UploadFile = File(...), name: str = Form(...),
                 technique: str = Form("sft"), column_map: str = Form("")):
    state = ui(request)
    folder = state.uploads / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_filename(file.filename)
    try:
        with path.open("wb") as out:
            while chunk := await file.read(CHUNK):
                out.write(chunk)
        return await run_in_threadpool(_create, request, name.strip(), str(path), technique, column_map.strip())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as_uploaded(e: TuneloopError, path: str) -> TuneloopError:
    """The report names the file as it was uploaded (`facts.jsonl:4`), not the server's copy."""
    here = path.rsplit("/", 1)[0] + "/"
    e.message = e.message.replace(here, "")
    e.details = [d.replace(here, "") for d in e.details]
    e.hint = e.hint.replace(here, "") if e.hint else e.hint
    return e


def _create(request: Request, name: str, path: str, technique: str, column_map: str):
    form = {"name": name, "technique": technique, "column_map": column_map}
    try:
        if technique not in TECHNIQUES:
            raise ValidationError(f"Pick a technique: {', '.join(TECHNIQUES)}.", param="technique")
        row, staged = ui(request).services.datasets.create(
            name, path, technique, column_map=column_map or None,
            command=f"tuneloop datasets create {name} --technique {technique}")
    except TuneloopError as e:
        return _page(request, e.http_status, report=_as_uploaded(e, path), form=form)
    return _page(request, created=row, staged=staged, form=form)
