"""Who may use the UI. On localhost anyone who reaches the port (like `tuneloop serve` without keys);
listening beyond it, `tuneloop ui` makes a token and prints the URL that carries it: `?token=` is
read once and becomes a session cookie (HttpOnly, SameSite=Lax, so another site's form cannot post
with it). A project's API key (`tuneloop keys create`) is accepted the same way and shows that
project only; the playground then uses that key with the project's server.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from tuneloop.ui.render import Viewer, render, ui, url

COOKIE = "tuneloop_ui"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

router = APIRouter()


class Refused(Exception):
    """A request another site made the browser send (a cross-origin form post), or one for a host
    name this UI does not answer to (DNS rebinding of an open localhost UI): 403."""


class LoginRequired(Exception):
    """No valid session, token or key: the login page (401)."""


class StartSession(Exception):
    """A valid `?token=`: set the cookie and drop the token from the address."""

    def __init__(self, location: str, sid: str):
        self.location, self.sid = location, sid


class Access:
    """`token` None: no check (localhost). `keys`: the project API keys (`services.keys`)."""

    def __init__(self, token: str | None, keys: Any, project: str, api_key: str | None = None,
                 hosts: tuple[str, ...] | None = None):
        self.token, self.keys, self.project, self.api_key, self.hosts = token, keys, project, api_key, hosts
        self.sessions: dict[str, Viewer] = {}

    @property
    def required(self) -> bool:
        return self.token is not None

    def check(self, secret: str) -> Viewer | None:
        """The viewer a token or API key stands for, else None."""
        if not secret:
            return None
        if self.token and hmac.compare_digest(secret.encode(), self.token.encode()):
            return Viewer(self.project, self.api_key)
        project = self.keys.project_of(secret) if self.keys is not None else None
        return Viewer(project, secret, by_key=True) if project else None

    def start(self, who: Viewer) -> str:
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = who
        return sid


def check_origin(request: Request, hosts: tuple[str, ...] | None) -> None:
    """Posts only from the UI's own pages (the browser's Origin names this host); with `hosts`,
    only requests addressed to one of those host names."""
    host = request.headers.get("host", "")
    if hosts is not None and urlsplit(f"//{host}").hostname not in hosts:
        raise Refused(f"This UI answers to {', '.join(hosts)}, not {host!r}.")
    origin = request.headers.get("origin")
    if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None and urlsplit(origin).netloc != host:
        raise Refused("A form from another site cannot act here.")


def require_viewer(request: Request) -> None:
    """The dependency every page has: sets `request.state.viewer` or raises LoginRequired."""
    access: Access = ui(request).access
    check_origin(request, access.hosts)
    if not access.required:
        return
    who = access.sessions.get(request.cookies.get(COOKIE, ""))
    if who is None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            who = access.check(auth[7:].strip())
    token = request.query_params.get("token")
    if token is not None:
        found = access.check(token)
        if found is None:
            raise LoginRequired()
        rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        raise StartSession(request.url.path + (f"?{rest}" if rest else ""), access.start(found))
    if who is None:
        raise LoginRequired()
    request.state.viewer = who


def set_cookie(request: Request, response, sid: str) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="lax", path=url(request, "") or "/")


def login_page(request: Request, error: str | None = None, status_code: int = 401):
    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return render(request, "login.html", status_code, error=error, next=nxt if not nxt.endswith("/login") else "/")


@router.get("/login")
def login_form(request: Request):
    return login_page(request, status_code=200)


@router.post("/login")
def login(request: Request, secret: str = Form(""), next: str = Form("/")):
    access: Access = ui(request).access
    check_origin(request, access.hosts)
    who = access.check(secret.strip()) if access.required else Viewer(access.project, access.api_key)
    if who is None:
        return render(request, "login.html", 401, error="That is not the UI's token or an active API key.",
                      next=next)
    target = next if next.startswith("/") and not next.startswith("//") else url(request, "/")
    response = RedirectResponse(target, status_code=303)
    if access.required:
        set_cookie(request, response, access.start(who))
    return response
