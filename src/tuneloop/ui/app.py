"""tuneloop ui: the FastAPI app of the web UI (`create_ui`), one router per page family.

    app = create_ui(open_services(), project="default", token=None)   # token None: no login (localhost)
    uvicorn.run(app, host="127.0.0.1", port=8600)
    # or inside another app, e.g. tuneloop serve:  server_app.mount("/ui", create_ui(services))

Errors are the services' `TuneloopError`s, rendered once here as a page with the message, its
details (a dataset's bad lines) and the fix, with the error's HTTP status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from tuneloop.errors import TuneloopError
from tuneloop.ui import auth, compare, datasets, jobs, pages, playground, registry, stream
from tuneloop.ui.render import STATIC, UIState, render


class UploadLimit:
    """Pure ASGI middleware: a POST body over `max_bytes` (TUNELOOP_MAX_UPLOAD_BYTES, default 1 GiB)
    is answered 413 before a byte is read, and a POST without a Content-Length (browsers always send
    one for a form) 411, so an upload's size is known and bounded before it is spooled to disk."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            length = dict(scope.get("headers") or []).get(b"content-length")
            problem = None
            if length is None:
                problem = (411, "Send the form with a Content-Length (a browser does).")
            elif not length.isdigit() or int(length) > self.max_bytes:
                problem = (413, f"The upload is larger than this server's limit of {self.max_bytes} bytes; split "
                                "the file, or raise TUNELOOP_MAX_UPLOAD_BYTES where the UI runs.")
            if problem is not None:
                return await PlainTextResponse(problem[1], status_code=problem[0])(scope, receive, send)
        await self.app(scope, receive, send)


def create_ui(services: Any, *, project: str | None = None, token: str | None = None,
              api_key: str | None = None, hosts: tuple[str, ...] | None = None) -> FastAPI:
    """The UI over `services` (`open_services()`). `token`: required from every viewer (`?token=`
    once, then a cookie) besides the project API keys; None lets everyone in (localhost).
    `hosts`: the only host names requests may be addressed to (an open UI on localhost passes
    the loopback names, so another site cannot reach it by DNS rebinding). Posts from another
    origin are refused either way."""
    from tuneloop.settings import resolve_project

    project = resolve_project(project)
    app = FastAPI(title="tuneloop ui", docs_url=None, redoc_url=None, openapi_url=None)
    keys = services.keys if token is not None else None
    app.state.ui = UIState(services, project, auth.Access(token, keys, project, api_key, hosts), api_key,
                           Path(services.settings.home) / "ui-uploads")
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(auth.router)
    guarded = [Depends(auth.require_viewer)]
    for module in (pages, registry, playground, datasets, jobs, compare, stream):
        app.include_router(module.router, dependencies=guarded)
    app.add_exception_handler(TuneloopError, _error_page)
    app.add_exception_handler(auth.LoginRequired, _login)
    app.add_exception_handler(auth.StartSession, _start_session)
    app.add_exception_handler(auth.Refused, _refused)
    from tuneloop.service.finetuning import max_upload_bytes

    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes())
    return app


def _error_page(request: Request, exc: TuneloopError):
    if request.url.path.endswith("/stream"):
        return PlainTextResponse(exc.message, status_code=exc.http_status)
    return render(request, "error.html", exc.http_status, error=exc)


def _login(request: Request, exc: auth.LoginRequired):
    if request.url.path.endswith("/stream"):
        return PlainTextResponse("Log in first: open the address `tuneloop ui` printed (it carries ?token=).",
                                 status_code=401)
    return auth.login_page(request)


def _refused(request: Request, exc: auth.Refused):
    return PlainTextResponse(str(exc), status_code=403)


def _start_session(request: Request, exc: auth.StartSession):
    response = RedirectResponse(exc.location, status_code=303)
    auth.set_cookie(request, response, exc.sid)
    return response
