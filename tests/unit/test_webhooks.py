"""Webhooks (service/webhooks.py) on a temporary store: the signature is the one the official
openai client verifies, a URL on loopback is refused unless the operator allows it, a job's end is
posted once per hook, a failed post is retried with backoff and given up after MAX_ATTEMPTS."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

openai = pytest.importorskip("openai")

from tuneloop.errors import ValidationError  # noqa: E402
from tuneloop.service import webhooks as W  # noqa: E402
from tuneloop.store.db import jobs, make_engine, migrate, utcnow  # noqa: E402
from tuneloop.store.repo import Store  # noqa: E402


@pytest.fixture
def store(tmp_path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    migrate(engine)
    return Store(engine)


def _job(store: Store, job_id: str, project: str = "team-a", state: str = "completed") -> None:
    store.finetuning.add_job(dict(id=job_id, project=project, status="submitted", model="m", training_file="file-x",
                                  validation_file=None, method={"type": "supervised", "supervised": {}}, suffix=None,
                                  seed=None, metadata=None, idempotency_key=None, fine_tuned_model=f"ft:m:{job_id}"))
    store.insert_job(dict(id=job_id, project=project, technique="sft", training_type="lora", model="m", dataset="d",
                          spec={}, plan={}, job_dir="/tmp/x", active_key=None))
    with store.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(state=state, finished_at=utcnow()))


def test_a_post_is_signed_as_openai_verifies_it():
    secret = "whsec_" + __import__("base64").b64encode(b"k" * 32).decode()
    body = W.event_body("ftjob-1", "succeeded", 1700000000)
    import time
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": W.sign(secret, "msg_1", ts, body)}
    event = openai.OpenAI(api_key="x").webhooks.unwrap(body, headers, secret=secret)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == "ftjob-1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        openai.OpenAI(api_key="x").webhooks.unwrap(body.replace(b"ftjob-1", b"ftjob-2"), headers, secret=secret)


def test_a_loopback_url_needs_the_operators_allowance(store, monkeypatch):
    monkeypatch.delenv("TUNELOOP_ALLOW_URLS", raising=False)
    hooks = W.WebhookService(store)
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.7/hook", "http://169.254.169.254/latest", "file:///etc"):
        with pytest.raises(ValidationError) as e:
            hooks.create("team-a", url)
        assert e.value.param == "url"
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "loopback")
    row = hooks.create("team-a", "http://127.0.0.1:9/hook")
    assert row["secret"].startswith("whsec_") and "secret" not in hooks.list()[0]
    with pytest.raises(ValidationError):
        hooks.create("team-a", "http://169.254.169.254/latest")       # metadata: never


def test_each_end_is_posted_once_retried_with_backoff_and_given_up_when_bounded(store, monkeypatch):
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "loopback")
    posts, answers = [], iter([500])           # the first post fails, every other succeeds

    def post(url, body, headers):
        posts.append((url, json.loads(body), headers))
        return next(answers, 200)

    hooks = W.WebhookService(store, post=post)
    _job(store, "ftjob-before")                          # ended before the hook: not posted
    hook = hooks.create("team-a", "http://127.0.0.1:9/hook")
    hooks.create("team-b", "http://127.0.0.1:9/other")  # another project's: none of team-a's jobs
    _job(store, "ftjob-done")
    _job(store, "ftjob-stopped", state="cancelled")
    _job(store, "ftjob-running", state="running")
    now = utcnow()
    assert hooks.tick(now) == 2 and len(posts) == 2 and {p[0] for p in posts} == {"http://127.0.0.1:9/hook"}
    assert {p[1]["data"]["id"]: p[1]["type"] for p in posts} == {
        "ftjob-done": "fine_tuning.job.succeeded", "ftjob-stopped": "fine_tuning.job.cancelled"}
    assert hooks.tick(now) == 0                          # the failed one waits BACKOFF[0]
    assert hooks.tick(now + timedelta(seconds=W.BACKOFF[0])) == 1
    retried = posts[-1]
    first = next(p for p in posts[:2] if p[2]["webhook-id"] == retried[2]["webhook-id"])
    assert first[1] == retried[1]                        # the same event and webhook-id on the retry
    assert hooks.tick(now + timedelta(seconds=60)) == 0  # both delivered; nothing is posted twice
    listed = hooks.list("team-a")[0]
    assert listed["delivered"] == 2 and listed["pending"] == 0 and listed["last_error"] is None
    assert sorted(d["attempts"] for d in store.webhooks.deliveries(hook["id"])) == [1, 2]

    down = W.WebhookService(store, post=lambda *a: 503)
    _job(store, "ftjob-failed", project="team-c", state="failed")
    store.webhooks.add({"id": "wh_c", "project": "team-c", "url": "http://127.0.0.1:9/c", "secret": hook["secret"]})
    _job(store, "ftjob-failed-2", project="team-c", state="failed")
    t, tries = now, 0
    for _ in range(20):
        t += timedelta(seconds=max(W.BACKOFF) + 1)
        tries += down.tick(t)
    assert tries == W.MAX_ATTEMPTS                       # bounded, then given up
    assert down.list("team-c")[0]["given_up"] == 1 and "503" in down.list("team-c")[0]["last_error"]
