"""`tuneloop ui` as a user starts it: on localhost it asks nobody; on every interface it prints an
address carrying a new token, which logs the browser in once (a cookie) and is needed otherwise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO, heavy_imports
from tests.ui.conftest import free_port


def test_ui_help_stays_light():
    assert heavy_imports("ui", "--help") == []


def test_localhost_needs_no_token_but_answers_only_to_its_own_name(ui_server):
    assert httpx.get(ui_server.url + "/jobs").status_code == 200
    assert "?token=" not in ui_server.log.read_text()
    port = ui_server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert httpx.get(ui_server.url + "/jobs", headers={"Host": host}).status_code == 200
    # another site's name pointed at 127.0.0.1 (DNS rebinding) gets nothing
    rebound = httpx.get(ui_server.url + "/jobs", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403 and "Jobs" not in rebound.text
    # nor can another site's page post a form to it (the browser names the page's origin)
    form = {"technique": "sft", "dataset_other": "/etc/hostname", "action": "start"}
    r = httpx.post(ui_server.url + "/jobs/new", data=form, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert "No jobs" in httpx.get(ui_server.url + "/jobs").text


def test_every_interface_prints_a_token_address_and_needs_it(home):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "ui", "--host", "0.0.0.0", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        m = re.match(rf"tuneloop ui on (http://127\.0\.0\.1:{port}/)\?token=([\w-]+)$", line.strip())
        assert m, line
        base, token = m.groups()
        deadline = time.monotonic() + 60
        while True:
            try:
                first = httpx.get(base + "jobs", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert first.status_code == 401 and "Token or API key" in first.text
        with httpx.Client(base_url=base, follow_redirects=True) as browser:
            r = browser.get(f"/jobs?token={token}")       # follows the redirect, keeps the cookie
            assert r.status_code == 200 and r.url.path == "/jobs" and "token" not in str(r.url)
            assert browser.get("/registry").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
