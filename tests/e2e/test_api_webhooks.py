"""Webhooks end to end: `tuneloop webhooks add` refuses a loopback URL unless the operator allows
it (TUNELOOP_ALLOW_URLS), then a live `tuneloop serve --workers 1` posts a trained job's
`fine_tuning.job.succeeded` and a cancelled job's `fine_tuning.job.cancelled` to a local receiver,
signed so that the official openai client's `webhooks.unwrap` verifies them; the receiver fails the
first post, which is retried with the same webhook-id; another project's job is not posted."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai")

from tests.conftest import cli  # noqa: E402
from tests.e2e.test_api_finetuning import BASE, Server, _key, _sft_rows, _upload, _wait  # noqa: E402

pytestmark = pytest.mark.slow


class Receiver:
    """A local endpoint that records every post; it answers 500 to the first, 200 after."""

    def __init__(self):
        self.posts: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(outer.posts) == 1 else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_job_ends_are_posted_signed_retried_and_only_to_their_project(tmp_path_factory, models_dir, tmp_path):
    home = tmp_path_factory.mktemp("webhooks")
    env = {**os.environ, "TUNELOOP_HOME": str(home / "home"), "TUNELOOP_MODELS_DIR": str(models_dir)}
    env["TUNELOOP_ALLOW_URLS"] = ""                   # tests/conftest.py allows loopback for every test
    keys = {p: _key(env, p) for p in ("team-a", "team-b")}
    rx = Receiver()
    refused = cli("webhooks", "add", "--project", "team-a", "--url", rx.url, env=env)
    assert refused.returncode != 0 and "loopback" in refused.stdout + refused.stderr, refused
    env["TUNELOOP_ALLOW_URLS"] = "loopback"           # the operator's allowance, here and for the server
    added = cli("webhooks", "add", "--project", "team-a", "--url", rx.url, "--json", env=env)
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["secret"]

    srv = Server(home, env, workers=1)
    srv.start()
    try:
        a, b = srv.client(keys["team-a"]), srv.client(keys["team-b"])
        f = _upload(a, tmp_path, "a.jsonl", _sft_rows())
        trained = a.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 1})
        stopped = a.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 1})
        a.fine_tuning.jobs.cancel(stopped.id)
        fb = _upload(b, tmp_path, "b.jsonl", _sft_rows())
        theirs = b.fine_tuning.jobs.create(model=BASE, training_file=fb.id, hyperparameters={"n_epochs": 1})
        b.fine_tuning.jobs.cancel(theirs.id)
        assert _wait(a, trained.id).status == "succeeded"
        deadline = time.monotonic() + 60
        while len({json.loads(body)["data"]["id"] for _, body in rx.posts[1:]}) < 2:   # both delivered
            assert time.monotonic() < deadline, rx.posts
            time.sleep(0.5)
        time.sleep(2)                                 # room for a duplicate, were there one
    finally:
        srv.stop()
        rx.server.shutdown()

    verify = openai.OpenAI(api_key="unused")
    events = [(h, verify.webhooks.unwrap(body, h, secret=secret)) for h, body in rx.posts]
    by_job = {}
    for h, e in events:
        by_job.setdefault(e.data.id, []).append((h["webhook-id"], e.type))
    assert set(by_job) == {trained.id, stopped.id}    # team-b's cancelled job went to no team-a hook
    assert {t for _, t in by_job[trained.id]} == {"fine_tuning.job.succeeded"}
    assert {t for _, t in by_job[stopped.id]} == {"fine_tuning.job.cancelled"}
    first_id = rx.posts[0][0]["webhook-id"]           # answered 500, posted again with the same id
    assert sorted(len(v) for v in by_job.values()) == [1, 2]
    assert sum(h["webhook-id"] == first_id for h, _ in rx.posts) == 2
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify.webhooks.unwrap(rx.posts[-1][1], rx.posts[-1][0], secret="whsec_" + "A" * 44)
    listed = json.loads(cli("webhooks", "list", "--json", env=env).stdout)
    assert listed[0]["delivered"] == 2 and listed[0]["pending"] == 0 and listed[0]["given_up"] == 0
