"""The browser tests' fixtures: `tuneloop ui` as a real subprocess on a free port with the test's
TUNELOOP_HOME, and Debian's chromium driven by Playwright (never a browser download). Screenshots
go to $TUNELOOP_UI_ARTIFACTS, else the test's tmp dir; the path is printed."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UIProcess:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log


@contextlib.contextmanager
def start_ui(log: Path, *args: str):
    """`tuneloop ui ARGS` on a free port of 127.0.0.1, until the block ends."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "ui", "--host", "127.0.0.1", "--port", str(port),
                                 *args], stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tuneloop ui did not start:\n{log.read_text()}")
        time.sleep(0.2)
    try:
        yield UIProcess(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def ui_server(home, tmp_path):
    with start_ui(tmp_path / "ui.log") as server:
        yield server


@pytest.fixture
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        message = "Debian's chromium is not installed (make system installs it)"
        if os.environ.get("CI") or os.environ.get("TUNELOOP_TEST_STRICT"):  # make test provides it
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("TUNELOOP_UI_ARTIFACTS") or tmp_path / "ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder


# The accessibility check, in the page (axe-core is not shipped): every visible form control has a
# label, every button and link a name, images alt text, the page one h1 and a language, and
# nothing wider than the screen (phones).
A11Y = """() => {
  const bad = [];
  const named = el => (el.getAttribute('aria-label') || '').trim() || (el.getAttribute('aria-labelledby') &&
      document.getElementById(el.getAttribute('aria-labelledby'))) || (el.textContent || '').trim();
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    const label = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest('label') ||
                  el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!label) bad.push(`control without a label: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll('button, a[href]'))
    if (!named(el)) bad.push(`${el.tagName.toLowerCase()} without a name: ${el.outerHTML.slice(0, 80)}`);
  for (const el of document.querySelectorAll('img'))
    if (!el.hasAttribute('alt')) bad.push(`img without alt: ${el.outerHTML.slice(0, 80)}`);
  for (const el of document.querySelectorAll('svg[role="img"]'))
    if (!el.getAttribute('aria-label')) bad.push('svg image without aria-label');
  if (document.querySelectorAll('h1').length !== 1) bad.push('not exactly one h1');
  if (!document.documentElement.lang) bad.push('no lang on html');
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    bad.push(`wider than the screen: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
  return bad;
}"""


def fake_job(store, job_id: str, *, technique: str = "sft", steps: int = 0, metrics: dict | None = None,
             state: str = "completed", loss=lambda s: 2.0 / (1 + s), training_type: str = "lora",
             output_path: str | None = None) -> dict:
    """A job row with `steps` metric events (loss and learning rate per step), inserted straight
    into the store in one transaction, as a runner would have left them."""
    from sqlalchemy import insert

    from tuneloop.store.db import events, utcnow

    assert store.insert_job(dict(id=job_id, project="default", technique=technique, training_type=training_type,
                                 model="tuneloop/tiny-qwen3", dataset="facts@v1", spec={}, plan=None,
                                 job_dir="/nonexistent", dataset_rows=10, total_steps=steps, active_key=None))
    key = "reward" if technique in ("grpo", "rlvr", "ppo") else "loss"
    rows = [dict(job_id=job_id, created_at=utcnow(), level="info", type="metrics", message="",
                 data={"step": s, key: loss(s), "learning_rate": 1e-4 * (1 - s / max(steps, 1))})
            for s in range(1, steps + 1)]
    if rows:
        with store.engine.begin() as conn:
            conn.execute(insert(events), rows)
    store.update_job(job_id, state=state, step=steps, metrics=metrics, output_path=output_path,
                     loss=loss(steps) if steps else None)
    return store.get_job(job_id)
