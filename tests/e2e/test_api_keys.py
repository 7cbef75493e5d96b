"""API keys end to end: keys made with `tuneloop keys create`, a live `tuneloop serve --api-key`
(the built-in tiny model, a free port), driven only by the official `openai` client: each project's
key works, a missing, wrong or revoked key is a 401 in OpenAI's error body, the admin key still
works, and another project's key may not change what the server serves (403). Files, jobs and `ft:`
models across projects: tests/e2e/test_api_finetuning.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from tests.conftest import REPO, cli  # noqa: E402

ADMIN = "sk-tuneloop-admin-e2e"
BASE = "tuneloop/tiny-qwen3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key(env: dict, project: str) -> tuple[str, str]:
    r = cli("keys", "create", "--project", project, "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    return out["id"], out["key"]


@pytest.fixture(scope="module")
def srv(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    env = {**os.environ, "TUNELOOP_HOME": str(root / "home"), "TUNELOOP_MODELS_DIR": str(models_dir)}
    keys = {p: _key(env, p) for p in ("team-a", "team-b", "team-c", "default")}
    port = _free_port()
    log = open(root / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--api-key", ADMIN,
                             "--model", BASE], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (root / "serve.log").read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (root / "serve.log").read_text()
        time.sleep(0.5)

    def client(key):
        return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)

    yield {"env": env, "keys": keys, "client": client, "url": url}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_each_key_works_and_missing_wrong_or_revoked_keys_get_401(srv):
    keys, client = srv["keys"], srv["client"]
    for key in (ADMIN, keys["team-a"][1], keys["team-b"][1]):
        assert BASE in [m.id for m in client(key).models.list()]
    r = client(keys["team-a"][1]).chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
    assert r.choices[0].message.content is not None
    for bad in ("sk-tl-wrong", keys["team-a"][1] + "x", ADMIN[:-1]):
        with pytest.raises(openai.AuthenticationError) as e:
            client(bad).models.list()
        assert set(e.value.body) == {"message", "type", "param", "code"}
        assert e.value.body["code"] == "invalid_api_key" and "Incorrect API key" in e.value.body["message"]
    r = httpx.get(srv["url"] + "/v1/models")
    assert r.status_code == 401 and "didn't provide an API key" in r.json()["error"]["message"]

    c_id, c_key = keys["team-c"]
    client(c_key).models.list()
    revoked = cli("keys", "revoke", c_id, env=srv["env"])
    assert revoked.returncode == 0 and "Revoked" in revoked.stdout, revoked.stderr
    with pytest.raises(openai.AuthenticationError):
        client(c_key).models.list()   # the running server sees the revoke at once
    listed = {k["id"]: k for k in json.loads(cli("keys", "list", "--json", env=srv["env"]).stdout)}
    assert listed[c_id]["revoked_at"] and listed[keys["team-a"][0]]["last_used_at"]
    assert listed[keys["team-b"][0]]["revoked_at"] is None
    assert not any(k[1] in json.dumps(listed) for k in keys.values())   # the list never holds a key


def test_admin_routes_take_only_the_servers_project(srv):
    body = {"lora_name": "nope", "lora_path": "/nowhere"}
    r = httpx.post(srv["url"] + "/v1/unload_lora_adapter", json=body,
                   headers={"Authorization": f"Bearer {srv['keys']['team-a'][1]}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    for key in (ADMIN, srv["keys"]["default"][1]):   # the server's project: past the key check
        r = httpx.post(srv["url"] + "/v1/unload_lora_adapter", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404, r.text
