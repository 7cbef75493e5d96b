"""API keys per project: `tuneloop keys create|list|revoke`, and the check `tuneloop serve` hands
its server (serving/routes/auth.py's `KeyCheck`).

    keys = open_services().keys
    row, key = keys.create("team-a")        # key: sk-tl-..., shown once; only its sha256 is stored
    keys.project_of(key)                     # "team-a"; None for a wrong or revoked key
    keys.revoke(row["id"])

A key is 32 random bytes (`secrets.token_urlsafe`), so its sha256 is as good as a slow hash: it
cannot be guessed, and the stored digest tells an attacker nothing usable. The digest found by
its index is compared again with `hmac.compare_digest`. `last_used_at` is written at most once a
minute per key, so checking a key on every request stays a read. `required` is asked on every
request of an open server: once True it stays True (keys are never deleted), so it is cached;
False is asked again at most once a second (OPEN_RECHECK), so a key made by `tuneloop keys create`
in another process closes a running open server within a second (at once when made here).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from tuneloop.errors import AuthenticationError, NotFoundError
from tuneloop.settings import Settings, resolve_project
from tuneloop.store import Store
from tuneloop.store.db import utcnow

PREFIX = "sk-tl-"
TOUCH_EVERY = timedelta(seconds=60)
OPEN_RECHECK = 1.0   # seconds an open server's "no key yet" answer is trusted
_MAX_KEY_CHARS = 200


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class KeyService:
    def __init__(self, store: Store, settings: Settings | None = None):
        self.store = store
        self.settings = settings
        self._touched: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._required: bool | None = None
        self._open_until = 0.0

    def create(self, project: str) -> tuple[dict[str, Any], str]:
        """A new key of `project`: (its row, the key). The key is not kept: show it once."""
        project = resolve_project(project)
        token = PREFIX + secrets.token_urlsafe(32)
        row = self.store.keys.add("key_" + secrets.token_hex(8), project, digest(token),
                                  f"{PREFIX}...{token[-4:]}")
        self._required = True
        return row, token

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every key (of `project`, when given), oldest first; rows hold no key, only its digest."""
        if project is not None:
            project = resolve_project(project)
        return self.store.keys.list(project)

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke key `key_id` (requests with it get 401 from then on); revoking twice is a no-op."""
        if not self.store.keys.get(key_id):
            known = [k["id"] for k in self.store.keys.list()]
            raise NotFoundError(f"No API key {key_id!r}.", param="id",
                                hint="`tuneloop keys list` shows the keys: " + (", ".join(known) or "none yet") + ".")
        self.store.keys.revoke(key_id)
        return self.store.keys.get(key_id)

    # ---- serving/routes/auth.py's KeyCheck --------------------------------------------------
    def project_of(self, token: str) -> str | None:
        """The project of the active key `token`, else None (wrong, revoked, or not a key)."""
        if not token.startswith(PREFIX) or len(token) > _MAX_KEY_CHARS:
            return None
        want = digest(token)
        row = self.store.keys.by_sha256(want)
        if row is None or not hmac.compare_digest(row["sha256"], want) or row["revoked_at"] is not None:
            return None
        self._touch(row)
        return row["project"]

    def required(self) -> bool:
        if self._required or (self._required is False and time.monotonic() < self._open_until):
            return bool(self._required)
        self._required = self.store.keys.any()
        self._open_until = time.monotonic() + OPEN_RECHECK
        return self._required

    def authenticate(self, token: str) -> str:
        """`project_of`, raising when the key is not an active one (for callers outside a server)."""
        project = self.project_of(token)
        if project is None:
            raise AuthenticationError("Incorrect API key provided.",
                                      hint="`tuneloop keys list` shows the keys and which are revoked.")
        return project

    def _touch(self, row: dict[str, Any]) -> None:
        now = utcnow()
        with self._lock:
            last = self._touched.get(row["id"]) or row["last_used_at"]
            if last is not None and now - last < TOUCH_EVERY:
                return
            self._touched[row["id"]] = now
        self.store.keys.touch(row["id"], now)

