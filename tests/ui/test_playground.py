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

# every test here trains a job and starts a server first (about 40 s each on 2 idle cores): not in test-fast
pytestmark = pytest.mark.slow

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


def streamed_text(body: str) -> str:
    """The answer in a chat-completions SSE body."""
    text = ""
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            delta = json.loads(line[6:])["choices"][0]["delta"]
            text += delta.get("content") or ""
    return text


def test_streamed_answers_and_a_registry_deploy_into_the_running_server(served):
    from tuneloop.ui import create_ui

    question, answer = CAPITALS[0]["prompt"], CAPITALS[0]["completion"]
    c = TestClient(create_ui(served, api_key=KEY))
    with c.stream("POST", "/playground/stream", data={"question": question, "model": "tuned-sft",
                                                      "max_tokens": "32"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = [chunk for chunk in r.iter_text()]
    body = "".join(chunks)
    assert streamed_text(body) == answer and body.rstrip().endswith("data: [DONE]")
    base = c.post("/playground/stream", data={"question": question, "model": "tuneloop/tiny-qwen3", "max_tokens": "32"})
    assert streamed_text(base.text) != answer

    unknown = c.post("/playground/stream", data={"question": question, "model": "nope"})
    assert unknown.status_code == 404 and unknown.text.startswith("Server: ")
    nokey = TestClient(create_ui(served)).post("/playground/stream", data={"question": question, "model": "tuned-sft"})
    assert nokey.status_code == 401 and "requires an API key" in nokey.text

    # the registry's Deploy loads the version into the running server: the playground can pick it
    page = c.get("/registry").text
    assert "The project's server runs at" in page
    r = c.post("/registry/deploy", data={"group": "default-tune-models", "version": "1", "name": "tune-models-v1"})
    assert "Adapter tune-models-v1 deployed from default-tune-models v1 (loaded into the running server" in r.text
    assert 'tune-models-v1 (adapter)</option>' in c.get("/playground").text
    again = c.post("/playground/stream", data={"question": question, "model": "tune-models-v1", "max_tokens": "32"})
    assert streamed_text(again.text) == answer


def test_the_page_streams_both_answers_side_by_side(served, browser, artifacts, tmp_path):
    from tests.ui.conftest import start_ui
    from tests.ui.test_browser import check_a11y

    question, answer = CAPITALS[0]["prompt"], CAPITALS[0]["completion"]
    t0 = time.monotonic()
    with start_ui(tmp_path / "ui.log", "--api-key", KEY) as ui_server:
        print(f"ui up after {time.monotonic() - t0:.1f}s")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(120_000)
        # deploy the trained version from the registry by clicking, then ask it in the playground
        page.goto(ui_server.url + "/registry")
        page.get_by_role("button", name="Deploy adapter").click()
        assert "deployed from default-tune-models v1 (loaded into the running server" in page.content()
        page.goto(ui_server.url + "/playground")
        check_a11y(page, "playground with a server")
        page.get_by_label("Question").fill(question)
        page.get_by_label("Tuned model").select_option("tune-models-v1")
        page.get_by_label("Max tokens").fill("16")
        page.get_by_role("button", name="Ask both").click()
        page.wait_for_function("() => document.getElementById('live').dataset.done === 'yes'")
        assert page.locator("#live-tuned-text").inner_text().strip() == answer   # the deployed version answers
        page.goto(ui_server.url + "/playground")
        page.get_by_label("Question").fill(question)
        page.get_by_label("Tuned model").select_option("tuned-sft")
        page.get_by_label("Max tokens").fill("16")
        page.evaluate("window.__same_page = true")
        page.get_by_role("button", name="Ask both").click()
        page.wait_for_function("() => document.getElementById('live').dataset.done === 'yes'")
        assert page.evaluate("window.__same_page") is True             # streamed in place, no form post
        assert page.locator("#live-tuned-text").inner_text().strip() == answer
        base = page.locator("#live-base-text").inner_text()
        assert base and base.strip() != answer                        # the untrained base answers otherwise
        if not base.strip():                                          # newlines only: the page says so
            assert "only whitespace" in page.locator("#live section").first.locator(".blank").inner_text()
        assert page.locator("#live-tuned").inner_text() == "Tuned: tuned-sft"
        print(f"streamed after {time.monotonic() - t0:.1f}s")
        check_a11y(page, "playground answered")
        page.screenshot(path=str(artifacts / "playground.png"))

        # without script the form posts and the server renders both answers
        context = browser.new_context(java_script_enabled=False)
        plain = context.new_page()
        plain.goto(ui_server.url + "/playground")
        plain.get_by_label("Question").fill(question)
        plain.get_by_label("Tuned model").select_option("tuned-sft")
        plain.get_by_role("button", name="Ask both").click()
        assert answer in plain.locator("section.answer", has_text="Tuned: tuned-sft").inner_text()
        context.close()
