"""python bench/ui_stream.py [--pages 1,8] [--seconds 20] [--max-steps 5000]

The web UI's live stream: server CPU per open job page while a job trains. On a fresh
TUNELOOP_HOME it starts `tuneloop ui` (a subprocess), starts an SFT job on the built-in model
(its runner is a process of its own, not counted), then measures the UI process's CPU time
(user + system, psutil) over windows of --seconds each: with no page open, then with K open
pages for each K in --pages (K httpx clients each holding `/jobs/ID/stream` open, reading every
event, as K browser tabs' EventSources would). Reported: the UI's CPU % in each window and, per
open page, (CPU % with K pages - CPU % with none) / K; the target is under 1% per page. Each
page's stream polls the store every stream.POLL_S seconds. The job must still be running when
the last window ends (else raise --max-steps); the script says so.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src" / "tuneloop" / "demo_data" / "sft.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "ui", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"tuneloop ui did not start:\n{log.read_text()}")
        time.sleep(0.2)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class Page(threading.Thread):
    """One open job page's stream: reads every event until told to stop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.events, self.stop, self.error = url, 0, threading.Event(), None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(30, read=None)) as client:
                with client.stream("GET", self.url) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line.startswith("event: "):
                            self.events += 1
                        if self.stop.is_set() or line == "event: end":
                            return
        except Exception as e:  # noqa: BLE001 - reported with the result
            self.error = e


def window(ui: psutil.Process, stream_url: str, pages: int, seconds: float) -> dict[str, float]:
    open_pages = [Page(stream_url) for _ in range(pages)]
    for p in open_pages:
        p.start()
    time.sleep(1.0)                                   # connected and past the first read of everything so far
    c0, t0 = cpu_seconds(ui), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(ui), time.monotonic()
    for p in open_pages:
        p.stop.set()
    errors = [p.error for p in open_pages if p.error]
    if errors:
        sys.exit(f"a page's stream failed: {errors[0]!r}")
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "events": sum(p.events for p in open_pages)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", default="1,8", help="open pages per window, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each measured window")
    ap.add_argument("--max-steps", type=int, default=5000, help="the job's steps (long enough to outlast the windows)")
    args = ap.parse_args()
    counts = [int(k) for k in args.pages.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-ui-bench-"))
    os.environ.update(TUNELOOP_HOME=str(tmp / "home"), HF_HUB_OFFLINE="1")
    env = dict(os.environ)
    port = free_port()
    proc = start_ui(env, port, tmp / "ui.log")
    from tuneloop.service.app import open_services
    from tuneloop.spec import TuneRequest

    services = open_services()
    job = None
    try:
        ui = psutil.Process(proc.pid)
        prep = services.jobs.prepare(TuneRequest(technique="sft", dataset=str(DEMO), model="tuneloop/tiny-qwen3",
                                                 hyperparameters={"max_steps": args.max_steps}))
        job = services.jobs.submit(prep).job
        deadline = time.monotonic() + 300
        while services.jobs.get(job["id"])["step"] < 1:       # training, not loading
            if services.jobs.get(job["id"])["state"] not in ("queued", "running") or time.monotonic() > deadline:
                sys.exit(f"the job did not start training: {services.jobs.get(job['id'])}")
            time.sleep(0.5)
        stream = f"http://127.0.0.1:{port}/jobs/{job['id']}/stream"
        step0 = services.jobs.get(job["id"])["step"]
        print(f"job {job['id']} training; windows of {args.seconds:g} s; UI pid {proc.pid}")
        idle = window(ui, stream, 0, args.seconds)
        print(f"0 pages: UI CPU {idle['cpu_pct']:.2f}%")
        rows = []
        for k in counts:
            w = window(ui, stream, k, args.seconds)
            per_page = (w["cpu_pct"] - idle["cpu_pct"]) / k
            rows.append((k, w, per_page))
            print(f"{k} pages: UI CPU {w['cpu_pct']:.2f}%, {per_page:.2f}% per page, {w['events']} events read")
        now = services.jobs.get(job["id"])
        steps = now["step"] - step0
        still = now["state"] == "running"
        print(f"the job trained {steps} steps during the windows; still running at the end: {still}"
              + ("" if still else " (NOT VALID: raise --max-steps)"))
        print("\n| open pages | UI CPU % | CPU % per page | events read |\n|---|---|---|---|")
        print(f"| 0 | {idle['cpu_pct']:.2f} | - | - |")
        for k, w, per_page in rows:
            print(f"| {k} | {w['cpu_pct']:.2f} | {per_page:.2f} | {w['events']} |")
    finally:
        if job is not None and services.jobs.get(job["id"])["state"] in ("queued", "running"):
            services.jobs.cancel(job["id"])
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
