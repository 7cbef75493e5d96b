"""`/compare?jobs=ID1,ID2,...`: several jobs' curves overlaid (loss, reward, learning rate: one
server-drawn SVG per metric, each job with its own dash pattern and marker, named in a legend) and
their final metrics side by side: a training job's `metrics` row, an evaluation job's (technique
"eval") report metrics, which the evaluation service puts on the job as `tuneloop eval` reads them,
with the report's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from tuneloop.curves import series
from tuneloop.errors import ValidationError
from tuneloop.ui.charts import overlay
from tuneloop.ui.jobs import own_job
from tuneloop.ui.render import render, ui

router = APIRouter()
CURVES = ("loss", "reward", "learning_rate")
MAX_JOBS = 6


def metric_columns(jobs: list[dict[str, Any]]) -> list[str]:
    """Every numeric final metric any of the jobs has, in first-seen order."""
    names: list[str] = []
    for j in jobs:
        for k, v in (j.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in names:
                names.append(k)
    return names


@router.get("/compare")
def compare(request: Request):
    """`?jobs=A,B` (a link) or `?jobs=A&jobs=B` (the Jobs page's ticked boxes)."""
    picked = ",".join(request.query_params.getlist("jobs"))
    ids = list(dict.fromkeys(j.strip() for j in picked.split(",") if j.strip()))
    if len(ids) < 2:
        raise ValidationError("Pick at least two jobs to compare.", param="jobs",
                              hint="Tick two or more jobs on the Jobs page, then “Compare the ticked jobs”.")
    if len(ids) > MAX_JOBS:
        raise ValidationError(f"Compare at most {MAX_JOBS} jobs at once ({len(ids)} were picked).", param="jobs",
                              hint="Tick fewer jobs on the Jobs page.")
    store = ui(request).services.store
    rows = [own_job(request, j) for j in ids]
    curves = {j["id"]: series(store.list_events(j["id"], type="metrics")) for j in rows}
    overlays = [overlay(name, [(j, c[name]) for j, c in curves.items() if c.get(name)])
                for name in CURVES if any(c.get(name) for c in curves.values())]
    reports = {j["id"]: str(Path(j["output_path"]) / "report.md")
               for j in rows if j["technique"] == "eval" and j.get("output_path")}
    return render(request, "compare.html", jobs=rows, overlays=overlays, columns=metric_columns(rows),
                  reports=reports)
