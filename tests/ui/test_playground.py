"""The playground against a real `tuneloop serve` (a subprocess on a free port) serving the
built-in base and an adapter trained here: one question, the base's and the tuned model's answers
side by side; the server's key comes from `tuneloop ui --api-key`, or from the project API key a
viewer logged in with; without one the page says what the server wants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_DATA, REPO, cli
from tests.ui.conftest import free_port

KEY = "sk-tuneloop-ui-admin"
CAPITALS = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def served(home, tmp_path):
    from tuneloop.service.app import open_services
    from tuneloop.service.runner import run_job
    from tuneloop.spec import TuneRequest

    services = open_services()
    job = services.jobs.submit(services.jobs.prepare(TuneRequest(technique="sft", dataset=str(DEMO_DATA / "sft.jsonl"))),
                               launch=False).job
    assert run_job(services.store, job["id"]) == "completed", services.jobs.get(job["id"])["error"]
    r = cli("adapter", "add", "tuned-sft", "--from-tune", "sft")
    assert r.returncode == 0, r.stderr
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--api-key", KEY],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    yield services
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_base_and_tuned_answers_side_by_side(served):
    from tuneloop.ui import create_ui

    question, answer = CAPITALS[0]["prompt"], CAPITALS[0]["completion"]
    c = TestClient(create_ui(served, api_key=KEY))
    page = c.get("/playground").text
    assert "Server: <code>http://127.0.0.1:" in page and '<option value="tuned-sft" selected>' in page
    r = c.post("/playground", data={"question": question, "model": "tuned-sft", "max_tokens": "32"})
    assert r.status_code == 200
    assert "Base: tuneloop/tiny-qwen3" in r.text and "Tuned: tuned-sft" in r.text
    tuned = r.text.split("Tuned: tuned-sft</h2>", 1)[1].split("</pre>", 1)[0]
    base = r.text.split("Base: tuneloop/tiny-qwen3</h2>", 1)[1].split("</pre>", 1)[0]
    assert tuned.strip().removeprefix("<pre>") == answer
    assert base.strip().removeprefix("<pre>") != answer

    # no key for a server that wants one: the page says so, in place
    page = TestClient(create_ui(served)).post("/playground", data={"question": question}).text
    assert "requires an API key" in page and "No server is running" not in page

    # a viewer who logged in with the project's API key asks with that key
    _, project_key = served.keys.create("default")
    k = TestClient(create_ui(served, token="ui-token"))
    k.post("/login", data={"secret": project_key, "next": "/playground"})
    r = k.post("/playground", data={"question": question, "model": "tuned-sft"})
    assert answer in r.text.split("Tuned: tuned-sft</h2>", 1)[1].split("</pre>", 1)[0]
