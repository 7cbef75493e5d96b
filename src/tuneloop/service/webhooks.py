"""Webhooks per project: when a fine-tuning job of the project succeeds, fails or is cancelled,
its event is POSTed to the project's URLs, signed as OpenAI's (Standard Webhooks) are, so the
official client's `client.webhooks.unwrap(body, headers, secret=...)` verifies it.

    hooks = open_services().webhooks
    row = hooks.create("team-a", "https://ci.example.com/hook")   # row["secret"]: whsec_..., shown once
    hooks.tick()          # what `tuneloop serve` runs every second: new events, then due posts

The body is OpenAI's event: `{"id": "evt_...", "object": "event", "created_at": T, "type":
"fine_tuning.job.succeeded", "data": {"id": "ftjob-..."}}`; the headers `webhook-id` (the
delivery's, the same on every retry), `webhook-timestamp` (Unix seconds of this attempt) and
`webhook-signature`: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret's bytes.
A post that does not answer 2xx within TIMEOUT_S is retried after 1, 2, 4, 8 and 16 s (BACKOFF),
then given up (`tuneloop webhooks list` shows its last error). The URL must pass netguard (no
loopback or private address unless the operator allows it with TUNELOOP_ALLOW_URLS, never
link-local or metadata), when it is added and again on every post, redirects included. Jobs that
ended before the hook was made are not posted; a job is posted once per hook, even with several
servers on one database (a delivery is leased before it is sent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable

from tuneloop.errors import NotFoundError
from tuneloop.netguard import UnsafeURLError, check_url, guarded_client
from tuneloop.settings import resolve_project
from tuneloop.store import Store
from tuneloop.store.db import utcnow

EVENTS = {"succeeded": "fine_tuning.job.succeeded", "failed": "fine_tuning.job.failed",
          "cancelled": "fine_tuning.job.cancelled"}
BACKOFF = (1, 2, 4, 8, 16)            # seconds before attempts 2..6
MAX_ATTEMPTS = len(BACKOFF) + 1
TIMEOUT_S = 10.0
LEASE = timedelta(seconds=60)         # a claimed delivery is another server's again after this


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header (Standard Webhooks, as OpenAI signs)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def event_body(job_id: str, status: str, at: int) -> bytes:
    return json.dumps({"id": "evt_" + uuid.uuid4().hex, "object": "event", "created_at": at,
                       "type": EVENTS[status], "data": {"id": job_id}}, separators=(",", ":")).encode()


class WebhookService:
    def __init__(self, store: Store, post: Callable[[str, bytes, dict[str, str]], int] | None = None):
        self.store = store
        self._post = post or _post

    def create(self, project: str, url: str) -> dict[str, Any]:
        """A new hook of `project` (its row, with the secret: show it once)."""
        project = resolve_project(project)
        try:
            check_url(url, what="webhook URL")
        except UnsafeURLError as e:
            e.param = "url"
            raise
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        return self.store.webhooks.add({"id": "wh_" + secrets.token_hex(8), "project": project, "url": url,
                                        "secret": secret})

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        """The hooks (no secrets) with their deliveries' counts and the last error."""
        out = []
        for row in self.store.webhooks.list(resolve_project(project) if project else None):
            dels = self.store.webhooks.deliveries(row["id"])
            failed = [d for d in dels if d["delivered_at"] is None and d["attempts"] >= MAX_ATTEMPTS]
            out.append({k: v for k, v in row.items() if k != "secret"} | {
                "delivered": sum(d["delivered_at"] is not None for d in dels), "given_up": len(failed),
                "pending": len(dels) - len(failed) - sum(d["delivered_at"] is not None for d in dels),
                "last_error": next((d["last_error"] for d in reversed(dels) if d["last_error"]), None)})
        return out

    def remove(self, webhook_id: str) -> None:
        if not self.store.webhooks.remove(webhook_id):
            raise NotFoundError(f"No webhook {webhook_id!r}.", param="id", hint="`tuneloop webhooks list` shows them.")

    # ---- what `tuneloop serve` runs every second ------------------------------------------------------
    def tick(self, now: datetime | None = None) -> int:
        """Record the events of jobs that ended, then post the due deliveries; returns the posts made."""
        from tuneloop.service.finetuning import job_object

        now = now or utcnow()
        for hook in self.store.webhooks.list():
            for rec, job in self.store.webhooks.ended_since(hook):
                obj = job_object(rec, job if rec["status"] in ("submitted", "paused") else None)
                if obj["status"] in EVENTS:
                    self.store.webhooks.add_delivery({
                        "id": "msg_" + uuid.uuid4().hex, "webhook_id": hook["id"], "job_id": rec["id"],
                        "type": EVENTS[obj["status"]], "body": event_body(rec["id"], obj["status"],
                                                                          obj["finished_at"] or int(time.time()))
                        .decode()}, now)
        sent = 0
        for d in self.store.webhooks.due(now, MAX_ATTEMPTS):
            if not self.store.webhooks.claim(d, now + LEASE):
                continue
            sent += 1
            ts = int(time.time())
            body = d["body"].encode()
            headers = {"content-type": "application/json", "webhook-id": d["id"], "webhook-timestamp": str(ts),
                       "webhook-signature": sign(d["secret"], d["id"], ts, body), "user-agent": "tuneloop-webhooks"}
            error = None
            try:
                status = self._post(d["url"], body, headers)
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except Exception as e:  # noqa: BLE001 - netguard's refusal, httpx's errors: recorded, retried
                error = f"{type(e).__name__}: {e}"
            attempts = d["attempts"] + 1
            wait = BACKOFF[min(attempts, len(BACKOFF)) - 1]
            self.store.webhooks.finish(d["id"], attempts=attempts, delivered_at=None if error else utcnow(),
                                       next_at=now + timedelta(seconds=wait), error=error)
        return sent


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    with guarded_client(timeout=TIMEOUT_S, follow_redirects=False) as client:
        return client.post(url, content=body, headers=headers).status_code
