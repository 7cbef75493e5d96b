"""What every page shares: the templates, the UI's state on the app, URLs under the mount point."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

NAV = (("/", "Home"), ("/datasets", "Datasets"), ("/jobs/new", "New job"), ("/jobs", "Jobs"),
       ("/registry", "Registry"), ("/playground", "Playground"))


@dataclass
class Viewer:
    """Who is looking: the project the pages show and the API key the playground uses with the server.
    `by_key`: signed in with a project API key, so not this machine's user (the UI's token, or
    localhost, is): the new-job form takes ids from them, never paths on the server (forms.py)."""

    project: str
    api_key: str | None = None
    by_key: bool = False


@dataclass
class UIState:
    services: Any                       # tuneloop.service.app.Services
    project: str                        # the project shown to a viewer without a project key
    access: Any                         # tuneloop.ui.auth.Access
    api_key: str | None = None          # for `tuneloop serve` when it requires one (--api-key)
    uploads: Path = field(default=Path("."))


def ui(request: Request) -> UIState:
    return request.app.state.ui


def viewer(request: Request) -> Viewer:
    return getattr(request.state, "viewer", None) or Viewer(ui(request).project, ui(request).api_key)


def url(request: Request, path: str) -> str:
    """`path` under the UI's mount point (`/ui` when mounted inside `tuneloop serve`)."""
    return request.scope.get("root_path", "").rstrip("/") + path


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else (value or "-")


def render(request: Request, name: str, status_code: int = 200, **context: Any):
    base = url(request, "")
    here = request.url.path[len(base):] or "/"
    current = max((p for p, _ in NAV if here == p or (p != "/" and here.startswith(p + "/"))), key=len, default=None)
    context |= {"base": base, "nav": [(base + p, label, p == current) for p, label in NAV], "viewer": viewer(request),
                "when": when}
    return templates.TemplateResponse(request, name, context, status_code=status_code)
