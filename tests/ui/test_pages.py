"""The web UI over HTTP (FastAPI's TestClient on `create_ui`): every page renders on the server,
an upload's bad lines come back with their line numbers and fix, the plan shows its estimates and
the equivalent command, a started job streams its events (SSE) to the end and is registered, and
the token / API-key login holds beyond localhost."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_DATA

PAGES = ("/", "/datasets", "/jobs", "/jobs/new", "/registry", "/playground")
BAD = b'{"prompt": "What is 2+2?", "completion": "4"}\n{"prompt": "no answer here"}\nnot json\n'


@pytest.fixture
def client(home):
    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui

    return TestClient(create_ui(open_services()))


def upload(client, name: str, filename: str, body: bytes, technique: str = "sft"):
    return client.post("/datasets", files={"file": (filename, body)}, data={"name": name, "technique": technique})


def test_every_page_renders_on_the_server_with_labelled_controls(client):
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert "<h1>" in r.text and 'href="/static/app.css"' in r.text
        ids = set(re.findall(r'<label for="([^"]+)"', r.text))
        controls = re.findall(r'<(?:input|select|textarea)\b(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', r.text)
        assert set(controls) <= ids, (path, set(controls) - ids)
    assert client.get("/static/curves.js").status_code == 200
    assert "cdn" not in client.get("/jobs/new").text.lower()


def test_new_job_fields_come_from_the_spec_registry(client):
    from tuneloop.spec import HYPERPARAMETERS

    page = client.get("/jobs/new").text
    for hp in HYPERPARAMETERS.values():
        assert f'name="{hp.name}"' in page and hp.cli_flag in page, hp.name
    assert "tuneloop/tiny-qwen3" in page and "(built-in, offline)" in page


def test_a_bad_upload_names_each_line_and_stores_nothing(client, home):
    r = upload(client, "facts", "facts.jsonl", BAD)
    assert r.status_code == 400
    assert "facts.jsonl:2: missing column &#39;completion&#39;" in r.text
    assert "facts.jsonl:3: column 1: invalid JSON" in r.text
    assert "How to fix it" in r.text and "Fix the records above" in r.text
    assert "Dataset facts.jsonl has 2 invalid line(s)" in r.text and "ui-uploads" not in r.text
    assert "No datasets yet" in r.text
    assert not any((home / "ui-uploads").iterdir())  # the upload itself is not kept


@pytest.mark.slow  # trains a job
def test_upload_then_plan_then_run_to_the_registry(client):
    r = upload(client, "facts", "facts.jsonl", (DEMO_DATA / "sft.jsonl").read_bytes())
    assert r.status_code == 200 and "Stored facts@v1" in r.text
    form = {"model": "tuneloop/tiny-qwen3", "technique": "sft", "training_type": "lora", "dataset": "facts",
            "max_steps": "4", "learning_rate": "1e-3"}
    plan = client.post("/jobs/new", data=form | {"action": "plan"})
    assert plan.status_code == 200, plan.text[-2000:]
    assert "est. peak memory" in plan.text and "est. time" in plan.text
    assert ("tuneloop tune --technique sft --dataset facts --model tuneloop/tiny-qwen3 --learning-rate 1e-3 "
            "--max-steps 4") in plan.text
    assert "Start this job" in plan.text
    assert client.get("/jobs").text.count("/jobs/sft-") == 0   # a plan creates nothing

    started = client.post("/jobs/new", data=form | {"action": "start"}, follow_redirects=False)
    assert started.status_code == 303, started.text[-2000:]
    job_url = started.headers["location"].split("?")[0]
    job_id = job_url.rsplit("/", 1)[1]
    assert job_id in client.get("/jobs").text

    kinds, steps, end = [], [], None
    with client.stream("GET", f"{job_url}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                kinds.append(event)
            elif line.startswith("data: ") and event == "metrics":
                steps.append(json.loads(line[6:]).get("step"))
            elif line.startswith("data: ") and event == "end":
                end = json.loads(line[6:])
    assert end and end["state"] == "completed", kinds
    assert "message" in kinds and "job" in kinds and kinds[-1] == "end"
    assert 4 in steps

    page = client.get(job_url).text
    assert "completed" in page and "tune-models v1" in page
    assert re.search(r'<polyline points="[\d., ]+" class="line"/>', page)   # the curve, drawn on the server
    again = client.get(f"{job_url}/stream?after=999999999")        # nothing after the end: one state, then end
    assert [l for l in again.text.splitlines() if l.startswith("event:")] == ["event: job", "event: end"]
    from tuneloop.service.app import open_services

    ids = [e["id"] for e in open_services().store.list_events(job_id)]
    resumed = client.get(f"{job_url}/stream", headers={"Last-Event-ID": str(ids[-3])}).text   # a reconnect
    assert re.findall(r"^id: (\d+)$", resumed, re.M) == [str(i) for i in ids[-2:]]
    registry = client.get("/registry").text
    assert "tune-models v1" in registry and job_id in registry and "tuneloop/tiny-qwen3" in registry


def test_the_playground_says_how_to_start_a_server(client):
    page = client.get("/playground").text
    assert "No server is running for project default" in page and "tuneloop serve --project default" in page


def test_beyond_localhost_a_token_or_a_project_key_is_asked_for(home):
    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui

    services = open_services()
    _, key = services.keys.create("team-a")
    c = TestClient(create_ui(services, token="s3cret-token"))
    r = c.get("/jobs")
    assert r.status_code == 401 and 'for="secret"' in r.text
    assert c.get("/jobs?token=wrong").status_code == 401
    assert c.get("/static/app.css").status_code == 200          # the login page needs its stylesheet
    r = c.get("/jobs?token=s3cret-token", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/jobs"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=lax" in r.headers["set-cookie"].lower()
    assert c.get("/jobs").status_code == 200                      # the cookie from now on
    assert "project: <strong>default</strong>" in c.get("/").text

    k = TestClient(create_ui(services, token="s3cret-token"))
    assert k.post("/login", data={"secret": "nope", "next": "/"}).status_code == 401
    r = k.post("/login", data={"secret": key, "next": "/registry"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/registry"
    assert "project: <strong>team-a</strong>" in k.get("/").text   # a key shows its own project
    assert TestClient(create_ui(services, token="t")).get("/", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    services.keys.revoke(services.keys.list("team-a")[0]["id"])
    assert TestClient(create_ui(services, token="t")).get("/", headers={"Authorization": f"Bearer {key}"}).status_code == 401



def test_a_viewer_with_a_project_key_names_ids_never_paths_on_the_server(home, models_dir):
    """The fine-tuning API's rule (service/server_paths.py) on the new-job form: a project key's
    holder is not this machine's user; the UI's token (its user) may still name a file."""
    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui

    services = open_services()
    _, key = services.keys.create("team-a")
    app = create_ui(services, token="s3cret-token")
    k = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    assert upload(k, "facts", "facts.jsonl", (DEMO_DATA / "sft.jsonl").read_bytes()).status_code == 200
    form = {"model": "tuneloop/tiny-qwen3", "technique": "sft", "training_type": "lora", "dataset": "facts",
            "max_steps": "4", "action": "plan"}
    plan = k.post("/jobs/new", data=form)
    assert plan.status_code == 200 and "est. time" in plan.text, plan.text[-2000:]   # ids: planned
    refused = {"model_other": "/etc", "dataset_other": str(DEMO_DATA / "sft.jsonl"), "dataset": "../../sft.jsonl",
               "model": str(models_dir / ".." / "x.gguf"), "judge_model": "/root/models/judge",
               "reward_prompt": "~/.ssh/id_rsa"}
    for field, value in refused.items():
        technique = "rlaif" if field in ("judge_model", "reward_prompt") else "sft"
        r = k.post("/jobs/new", data=form | {"technique": technique, field: value})
        name = field.removesuffix("_other")
        assert r.status_code == 400 and "path on the server" in r.text and name in r.text, (field, r.text[-1500:])
    r = k.post("/jobs/new", data=form | {"dataset": "s3://bucket/train.jsonl"})
    assert r.status_code == 400 and "its own credentials" in r.text
    rows = [json.loads(line) | {"reward_model": "builtin:exact_match"}
            for line in (DEMO_DATA / "rlvr.jsonl").read_text().splitlines() if line.strip()]
    sums = "".join(json.dumps(r) + "\n" for r in rows).encode()
    assert upload(k, "sums", "rlvr.jsonl", sums, "rlvr").status_code == 200
    rl = form | {"technique": "rlvr", "dataset": "sums", "num_generations": "4"}
    for fn in ("os:system", "/tmp/reward.py:score", "https://grader.example.com/score"):   # code, or a URL to reach
        r = k.post("/jobs/new", data=rl | {"reward_function": fn})
        assert r.status_code == 400 and "reward_function" in r.text and "builtin:" in r.text, (fn, r.text[-1500:])
    r = k.post("/jobs/new", data=rl | {"reward_function": "builtin:exact_match"})
    assert r.status_code == 200 and "est. time" in r.text, r.text[-2000:]
    r = k.post("/jobs/new", data=form | {"action": "start", "model": "/etc"}, follow_redirects=False)
    assert r.status_code == 400 and not services.store.find_jobs("team-a")       # nothing was started
    under = models_dir / "tuneloop--tiny-qwen3"       # built by the first plan; the models dir is the server's
    assert under.is_dir() and k.post("/jobs/new", data=form | {"model": str(under)}).status_code == 200

    operator = TestClient(app, headers={"Authorization": "Bearer s3cret-token"})
    r = operator.post("/jobs/new", data=form | {"dataset": str(DEMO_DATA / "sft.jsonl")})
    assert r.status_code == 200 and "est. time" in r.text, r.text[-2000:]         # this machine's user

def test_mounted_under_a_prefix_every_link_keeps_it(home):
    from fastapi import FastAPI

    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui

    outer = FastAPI()
    outer.mount("/ui", create_ui(open_services()))
    c = TestClient(outer)
    page = c.get("/ui/jobs/new").text
    assert 'href="/ui/static/app.css"' in page and 'action="/ui/jobs/new"' in page and 'href="/ui/datasets"' in page
    assert c.get("/ui/static/curves.js").status_code == 200


def test_cancel_from_the_job_page_ends_the_stream_cancelled(client):
    upload(client, "facts", "facts.jsonl", (DEMO_DATA / "sft.jsonl").read_bytes())
    form = {"technique": "sft", "dataset": "facts", "max_steps": "5000", "action": "start"}
    job_url = client.post("/jobs/new", data=form, follow_redirects=False).headers["location"].split("?")[0]
    assert "Cancel job" in client.get(job_url).text
    assert client.post(f"{job_url}/cancel", follow_redirects=False).status_code == 303
    with client.stream("GET", f"{job_url}/stream") as stream:
        ends = [line for line in stream.iter_lines() if line.startswith("data: ") and '"state": "cancelled"' in line]
    assert ends
    page = client.get(job_url).text
    assert "cancelled" in page and "Cancel job" not in page and "cancel requested by user" in page


def test_an_rlvr_plan_carries_its_reward_and_rl_knobs(client):
    form = {"technique": "rlvr", "dataset_other": str(DEMO_DATA / "rlvr.jsonl"), "reward_function": "builtin:exact_match",
            "num_generations": "4", "reward_prompt": "ignored for rlvr", "action": "plan"}
    r = client.post("/jobs/new", data=form)
    assert r.status_code == 200, r.text[-2000:]
    assert "4 per prompt" in r.text and "est. time" in r.text
    assert (f"tuneloop tune --technique rlvr --dataset {DEMO_DATA / 'rlvr.jsonl'} --reward-function "
            "builtin:exact_match --num-generations 4") in r.text
    bad = client.post("/jobs/new", data=form | {"technique": "sft", "dataset_other": str(DEMO_DATA / "sft.jsonl")})
    assert bad.status_code == 400 and "num_generations only applies to rlvr and rlaif jobs" in bad.text


def test_a_job_whose_runner_is_gone_resumes_from_its_page(client):
    import socket
    import subprocess

    from tuneloop.service.app import open_services
    from tuneloop.spec import TuneRequest

    services = open_services()
    upload(client, "facts", "facts.jsonl", (DEMO_DATA / "sft.jsonl").read_bytes())
    prep = services.jobs.prepare(TuneRequest(technique="sft", dataset="facts", hyperparameters={"max_steps": 4}))
    job = services.jobs.submit(prep, launch=False).job
    gone = subprocess.Popen(["true"])
    gone.wait()                                   # a runner that died: its pid is no process now
    services.store.update_job(job["id"], state="running", pid=gone.pid, host=socket.gethostname())
    page = client.get(f"/jobs/{job['id']}").text
    assert "Its runner process is gone" in page and f'action="/jobs/{job["id"]}/resume"' in page
    assert client.post(f"/jobs/{job['id']}/resume", follow_redirects=False).status_code == 303
    with client.stream("GET", f"/jobs/{job['id']}/stream") as stream:
        ends = [line for line in stream.iter_lines() if line.startswith("data: ") and '"state": "completed"' in line]
    assert ends, services.jobs.get(job["id"])
    assert "Its runner process is gone" not in client.get(f"/jobs/{job['id']}").text
