"""The overview page: `/` (where things stand, what to do next)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneloop.ui.render import render, ui, viewer

router = APIRouter()


@router.get("/")
def home(request: Request):
    services, project = ui(request).services, viewer(request).project
    return render(request, "home.html", jobs=services.store.find_jobs(project, limit=5),
                  datasets=services.datasets.list(), packages=services.store.list_packages(project=project))
