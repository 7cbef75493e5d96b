"""Jobs: `/jobs` (list), `/jobs/new` (the guided form, its plan, submit), `/jobs/JOB_ID` (state,
curves, events; cancel and resume). A job runs in its own runner process; these pages only read
the store through the services and ask the job service to start, cancel or resume."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from tuneloop.catalog import TECHNIQUES, TRAINING_TYPES, load_catalog
from tuneloop.errors import NotFoundError, TuneloopError
from tuneloop.ui import forms
from tuneloop.ui.charts import job_panels
from tuneloop.ui.render import render, ui, url, viewer

router = APIRouter()
ACTIVE = ("queued", "running")
OUTCOMES = {"submitted": "Submitted: the job is starting in its own process.",
            "following": "A job for this technique is already running: this is it (tick “start a new job” to "
                         "replace it).",
            "completed": "A completed job for this technique exists: this is it (tick “start a new job” to train "
                         "again)."}


def percent(job: dict[str, Any]) -> int:
    if job["state"] == "completed":
        return 100
    return min(100, round(100 * job["step"] / job["total_steps"])) if job.get("total_steps") else 0


def own_job(request: Request, job_id: str) -> dict[str, Any]:
    """The job, when it belongs to the viewer's project (another project's job is not found)."""
    job = ui(request).services.jobs.get(job_id)
    if job["project"] != viewer(request).project:
        raise NotFoundError(f"No job named {job_id!r}.", hint="See the jobs of this project on the Jobs page.")
    return job


@router.get("/jobs")
def jobs_page(request: Request):
    rows = ui(request).services.store.find_jobs(viewer(request).project)
    return render(request, "jobs.html", jobs=rows, percent=percent)


def _form_context(request: Request, vals: dict[str, str]) -> dict[str, Any]:
    services = ui(request).services
    catalog = load_catalog()
    datasets = []
    for d in services.datasets.list():
        datasets.append(d["name"])
        datasets += [v["ref"] for v in services.datasets.versions(d["name"])]
    return {"vals": vals, "models": sorted(catalog.models.values(), key=lambda m: (not m.builtin, m.id)),
            "default_model": catalog.default_model().id, "datasets": datasets, "techniques": TECHNIQUES,
            "training_types": TRAINING_TYPES,
            "knobs": forms.knobs(vals.get("technique", "sft"), vals.get("training_type", "lora"), vals.get("model"))}


@router.get("/jobs/new")
def new_job(request: Request):
    vals = forms.values_of(dict(request.query_params))
    return render(request, "new_job.html", **_form_context(request, vals))


@router.post("/jobs/new")
async def new_job_post(request: Request):
    form = await request.form()
    vals = forms.values_of({k: v for k, v in form.items() if isinstance(v, str)})
    action, force = vals.pop("action", "plan"), vals.pop("force", None) == "on"
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_plan_or_start, request, vals, action, force)


def _plan_or_start(request: Request, vals: dict[str, str], action: str, force: bool):
    """What `tuneloop tune` does: `prepare` then `submit` (a dry run for the plan)."""
    svc = ui(request).services.jobs
    project = viewer(request).project
    ctx = _form_context(request, vals) | {"force": force, "command": forms.command(vals, project, force)}
    try:
        if viewer(request).by_key:
            forms.refuse_server_paths(vals, ui(request).services.settings.models_dir, ui(request).uploads)
        req = forms.tune_request(vals, project)
        dry = action != "start"
        prep = svc.prepare(req, dry_run=dry)
        outcome = svc.submit(prep, force=force, dry_run=dry)
    except TuneloopError as e:
        return render(request, "new_job.html", e.http_status, error=e, **ctx)
    if outcome.kind == "dry_run" or dry:
        return render(request, "new_job.html", prep=prep, outcome=outcome, existing=outcome.job, **ctx)
    return RedirectResponse(url(request, f"/jobs/{outcome.job['id']}?outcome={outcome.kind}"), status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, outcome: str | None = None):
    job = own_job(request, job_id)
    svc = ui(request).services.jobs
    events = svc.store.list_events(job_id)
    messages = [e for e in events if e["type"] != "metrics"]
    panels = job_panels([e for e in events if e["type"] == "metrics"], job["technique"])
    return render(request, "job.html", job=job, messages=messages, panels=panels, percent=percent(job),
                  last_event=events[-1]["id"] if events else 0, active=job["state"] in ACTIVE,
                  stale=svc.is_stale(job), package=svc.store.package_for_job(job_id),
                  notice=OUTCOMES.get(outcome or ""))


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str):
    own_job(request, job_id)
    ui(request).services.jobs.cancel(job_id)
    return RedirectResponse(url(request, f"/jobs/{job_id}"), status_code=303)


@router.post("/jobs/{job_id}/resume")
def resume(request: Request, job_id: str):
    """A job whose runner is gone continues from its last checkpoint (as re-running `tune` does)."""
    svc = ui(request).services.jobs
    job = own_job(request, job_id)
    if svc.is_stale(job):
        svc.recover(job)
    return RedirectResponse(url(request, f"/jobs/{job_id}"), status_code=303)
