"""The sandbox: user Python reward code runs in worker processes apart from the trainer.

    box = Sandbox(workers=2, timeout_s=10, memory_mb=2048)
    scores = box.call({"kind": "file", "path": "/abs/reward.py", "function": "score"}, samples)
    box.close()

Each worker (`tuneloop.rewards.worker`) is a fresh interpreter (not a fork of the trainer, so it
holds none of its memory) started with a scrubbed environment: no API keys, tokens or database
URLs, only PATH, locale, a private HOME/TMPDIR and the PYTHONPATH that finds tuneloop and the
reward's folder. It caps its own address space (RLIMIT_AS), leaves the network where the OS allows
it, and times every call out with SIGALRM. The parent keeps a hard deadline on top (timeout + 2 s):
a worker that does not answer is killed and replaced, the sample it was on is marked `timeout`, and
the rest of its chunk goes to the new worker. A worker that dies (segfault, os._exit, the OOM
killer) marks its sample `crash` the same way. A batch is split across the workers in contiguous
chunks and they run concurrently.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tuneloop.rewards.base import Sample, Score

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">I")
GRACE_S = 2.0
LOAD_S = 30.0             # importing the user's module may take a while (the worker times it out too)
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
DEFAULT_MEMORY_MB = int(os.environ.get("TUNELOOP_SANDBOX_MEMORY_MB") or 2048)


def scrubbed_env(home: str, paths: list[str]) -> dict[str, str]:
    """The environment a worker gets: nothing secret is inherited."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the tuneloop package
    env.update(HOME=home, TMPDIR=home, PYTHONPATH=os.pathsep.join([package_root, *paths]),
               PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


class WorkerGone(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class _Worker:
    def __init__(self, index: int, home: str, env: dict[str, str], memory_mb: int, cwd: str):
        self.index = index
        self.log_path = os.path.join(home, f"worker-{index}.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "tuneloop.rewards.worker", "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=cwd,
            close_fds=True, start_new_session=True)
        self.info: dict[str, Any] = {}

    def send(self, obj: Any) -> None:
        data = json.dumps(obj, default=str).encode()
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._gone() from None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerGone("timeout", "did not answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise self._gone()
            buf += chunk
        return buf

    def recv(self, deadline: float) -> Any:
        (n,) = _HEADER.unpack(self._read_exact(_HEADER.size, deadline))
        return json.loads(self._read_exact(n, deadline))

    def _gone(self) -> WorkerGone:
        try:
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            if -code == signal.SIGKILL:
                return WorkerGone("crash", f"the worker process was killed ({name}; out of memory?)")
            return WorkerGone("crash", f"the worker process died ({name})")
        return WorkerGone("crash", f"the worker process exited (code {code})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()


class Sandbox:
    """A pool of sandbox workers. Thread-safe: concurrent `call`s share the workers."""

    def __init__(self, workers: int | None = None, timeout_s: float = 10.0, memory_mb: int | None = None,
                 search_paths: list[str] | None = None, cwd: str | None = None):
        self.size = max(1, workers or min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb or DEFAULT_MEMORY_MB)
        self.search_paths = [str(Path(p).resolve()) for p in (search_paths or [os.getcwd()])]
        self.home = tempfile.mkdtemp(prefix="tuneloop-sandbox-")
        self.cwd = cwd or self.home
        self._env = scrubbed_env(self.home, self.search_paths)
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._count = 0
        self._conventions: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="sandbox")
        self._closed = False
        atexit.register(self.close)

    # ---- workers --------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        with self._lock:
            self._count += 1
            index = self._count
        w = _Worker(index, self.home, self._env, self.memory_mb, self.cwd)
        with self._lock:
            self._all.append(w)
        return w

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.proc.poll() is None:
                    return w
                w.kill()
        return self._spawn()

    def _give(self, w: _Worker) -> None:
        with self._lock:
            if self._closed:
                w.kill()
            else:
                self._idle.append(w)

    def _discard(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            if w in self._all:
                self._all.remove(w)

    def info(self) -> dict[str, Any]:
        """What isolation the workers got: {"network": "namespace"|"python", "memory_mb", ...}."""
        w = self._take()
        try:
            w.send({"op": "ping"})
            info = w.recv(time.monotonic() + 30.0)
        except WorkerGone:
            self._discard(w)
            raise
        self._give(w)
        return info

    def warm(self) -> None:
        """Start every worker now (instead of on the first call)."""
        workers = [self._take() for _ in range(self.size)]
        for w in workers:
            self._give(w)

    # ---- calls ------------------------------------------------------------------------------------
    def convention(self, target: dict[str, Any]) -> str:
        """How the worker will call the target: 'sample', 'batch' or 'grade' ('load' error → 'sample')."""
        if target["kind"] == "code_tests":
            return "sample"
        key = json.dumps(target, sort_keys=True)
        if key not in self._conventions:
            w = self._take()
            try:
                w.send({"op": "load", "target": target, "timeout": self.timeout_s})
                res = w.recv(time.monotonic() + max(self.timeout_s, LOAD_S) + GRACE_S)
            except WorkerGone:
                self._discard(w)
                return "sample"
            self._give(w)
            if "convention" not in res:
                return "sample"  # the load error is reported per sample by the calls
            self._conventions[key] = res["convention"]
        return self._conventions[key]

    def call(self, target: dict[str, Any], samples: list[Sample], timeout_s: float | None = None) -> list[Score]:
        if not samples:
            return []
        timeout = float(timeout_s or self.timeout_s)
        payload = [{"id": s.id, "prompt": s.prompt, "completion": s.completion, "row": s.row} for s in samples]
        if self.convention(target) == "batch":
            return self._run_chunk(target, payload, timeout, batch=True)
        n = len(payload)
        parts = min(self.size, n)
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        chunks = [payload[bounds[i]:bounds[i + 1]] for i in range(parts)]
        if parts == 1:
            return self._run_chunk(target, chunks[0], timeout)
        results = list(self._pool.map(lambda c: self._run_chunk(target, c, timeout), chunks))
        return [s for part in results for s in part]

    def _run_chunk(self, target: dict[str, Any], items: list[dict[str, Any]], timeout: float,
                   batch: bool = False) -> list[Score]:
        """Run items on one worker; on a hang or crash, mark the current item and go on with a new one."""
        out: list[Score | None] = [None] * len(items)
        start = 0
        per_item = timeout * (len(items) if batch else 1)
        if target["kind"] == "code_tests":
            per_item = timeout * 64 + GRACE_S  # the worker times each test itself
        while start < len(items):
            w = self._take()
            try:
                w.send({"op": "call", "target": target, "samples": items[start:], "timeout": timeout})
                load_slack = LOAD_S if target["kind"] != "code_tests" else 0.0
                while True:
                    msg = w.recv(time.monotonic() + per_item + GRACE_S + load_slack)
                    load_slack = 0.0
                    if msg.get("loaded"):
                        continue
                    if msg.get("done"):
                        break
                    out[start + msg["i"]] = Score.from_dict(msg["score"])
                self._give(w)
                break
            except WorkerGone as e:
                self._discard(w)
                first = next(i for i in range(start, len(items)) if out[i] is None)
                end = len(items) if batch else first + 1
                for i in range(first, end):
                    if target["kind"] == "code_tests":  # model-written code that kills or hangs its worker fails
                        out[i] = Score(0.0, {"tests_passed": 0.0, "compiled": 0.0})
                    elif e.kind == "timeout":
                        out[i] = Score.failed("timeout", f"timed out after {per_item:g} s (the worker was killed)")
                    else:
                        out[i] = Score.failed("crash", e.message)
                start = end
        return [s if s is not None else Score.failed("crash", "no result") for s in out]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._idle, self._all = list(self._all), [], []
        for w in workers:
            w.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InProcess:
    """The same calls without a sandbox (benchmarks only: user code shares the caller's process)."""

    def __init__(self, search_paths: list[str] | None = None):
        self.search_paths = [str(Path(p).resolve()) for p in (search_paths or [os.getcwd()])]
        self._loaded: dict[str, Any] = {}

    def call(self, target: dict[str, Any], samples: list[Sample], timeout_s: float | None = None) -> list[Score]:
        from tuneloop.rewards import worker
        from tuneloop.rewards.base import coerce
        from tuneloop.rewards.calling import call_batch, call_one, convention

        key = json.dumps(target, sort_keys=True)
        if key not in self._loaded:
            self._loaded[key] = worker._load({**target, "paths": self.search_paths})
        fn = self._loaded[key]
        payload = [{"id": s.id, "prompt": s.prompt, "completion": s.completion, "row": s.row} for s in samples]
        conv = convention(fn)
        if conv == "batch":
            return call_batch(fn, payload)
        out = []
        for s in payload:
            try:
                out.append(coerce(call_one(fn, s, conv)))
            except Exception as e:  # noqa: BLE001
                out.append(Score.failed("exception", f"{type(e).__name__}: {e}"))
        return out

    def close(self) -> None:
        pass
