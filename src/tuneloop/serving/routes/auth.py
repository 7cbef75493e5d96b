"""Who a /v1 request is: `Authorization: Bearer KEY`, checked against the server's admin key
(`tuneloop serve --api-key`, in `app.state.api_key`) and the database's project keys (`tuneloop
keys create`), which the edge hands the server as a `KeyCheck` (`app.state.keys`; this package
never opens the store). Every comparison of a secret is constant-time.

- the admin key → the server's project (`app.state.info["project"]`, else `default`);
- a project key → its project;
- no admin key and no key ever created → `default` (an open server, as before keys existed);
- otherwise a missing, wrong or revoked key → 401 (AuthenticationError, an OpenAI error body).

`project_dependency` is the FastAPI dependency the fine-tuning API's routers (api/) filter by
(`request_project`, what it runs, also answers a route body once it ran); `require_api_key`
guards the inference routers with the same rule; `require_admin` the admin router (what the
server serves): only the server's own project (its --api-key or one of its keys).
The dependencies are async so that a request with the admin key, or to an open server, is
answered without a hop to the thread pool (a fifth of a job list's time: `required` is cached,
service/keys.py); a project key is
looked up in the thread pool, since its lookup may write `last_used_at` (once a minute), which
would hold the event loop while another process holds the database.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tuneloop.errors import AuthenticationError, PermissionDeniedError

DEFAULT_PROJECT = "default"


class KeyCheck(Protocol):
    """The database's API keys, as the server asks about them (service/keys.py implements it)."""

    def project_of(self, token: str) -> str | None:
        """The project of the active key `token`; None when it is no key, or a revoked one."""

    def required(self) -> bool:
        """Whether a key must be sent: True once any key was created (revoking all keys does not
        reopen the server)."""


def bearer_token(request: Request) -> str:
    given = request.headers.get("authorization", "")
    return given[7:].strip() if given[:7].lower() == "bearer " else ""


def request_project(request: Request) -> str:
    """The project the request's key belongs to (the rule above); raises AuthenticationError."""
    cached = getattr(request.state, "project", None)
    if cached is not None:
        return cached
    state = request.app.state
    admin: str | None = getattr(state, "api_key", None)
    keys: KeyCheck | None = getattr(state, "keys", None)
    token = bearer_token(request)
    project: str | None = None
    if admin is not None and hmac.compare_digest(token.encode(), admin.encode()):
        project = getattr(state, "info", {}).get("project") or DEFAULT_PROJECT
    elif keys is not None and token:
        project = keys.project_of(token)
    if project is None:
        if admin is None and (keys is None or not keys.required()):
            project = DEFAULT_PROJECT
        elif not token:
            raise AuthenticationError(
                "You didn't provide an API key.",
                hint="Send it as `Authorization: Bearer KEY` (the openai client's api_key); "
                     "`tuneloop keys create --project P` makes one.")
        else:
            raise AuthenticationError(
                "Incorrect API key provided.",
                hint="Send a key from `tuneloop keys create` (or the server's --api-key) as "
                     "`Authorization: Bearer KEY`; `tuneloop keys list` shows which are revoked.")
    request.state.project = project
    return project


async def project_dependency(request: Request) -> str:
    """request_project, on the event loop unless a project key must be looked up."""
    cached = getattr(request.state, "project", None)
    if cached is not None:
        return cached
    token = bearer_token(request)
    admin: str | None = getattr(request.app.state, "api_key", None)
    is_admin = admin is not None and hmac.compare_digest(token.encode(), admin.encode())
    keys: KeyCheck | None = getattr(request.app.state, "keys", None)
    if token and not is_admin and keys is not None and keys.required():
        return await run_in_threadpool(request_project, request)
    return request_project(request)


async def require_api_key(request: Request) -> None:
    await project_dependency(request)


async def require_admin(request: Request) -> None:
    project = await project_dependency(request)
    own = getattr(request.app.state, "info", {}).get("project") or DEFAULT_PROJECT
    if project != own:
        raise PermissionDeniedError(
            f"A key of project {project!r} cannot change what this server of project {own!r} serves.",
            hint="Use the server's --api-key, or a key of its project (`tuneloop keys create --project "
                 f"{own}`).")
