"""The sandbox: user Python reward code runs in worker processes apart from the trainer.

    box = Sandbox(workers=2, timeout_s=10, memory_mb=2048)
    scores = box.call({"kind": "file", "path": "/abs/reward.py", "function": "score"}, samples)
    box.close()

Each worker (`tuneloop.rewards.worker`) is a fresh interpreter (not a fork of the trainer, so it
holds none of its memory) started with a scrubbed environment (no API keys, tokens or database
URLs) inside the isolation `tuneloop.rewards.isolation` builds: new user, mount, PID, network, IPC
and UTS namespaces, a read-only view of only the interpreter, tuneloop and the reward's own folder,
a private /tmp, no capabilities, a seccomp filter, and a cgroup capping its memory and processes
(bubblewrap when installed, the kernel's primitives otherwise; `Sandbox.info()["isolation"]`).
Without either, user code is refused (`SandboxUnavailable`) unless `allow_unsafe` asks for the old
process limits only. A worker sees the folder of the reward it runs: workers are started per set of
folders, and idle workers of another set are replaced when the pool is full.

Every call runs under a SIGALRM timer in the worker; the parent keeps a hard deadline on top
(timeout + 2 s): a worker that does not answer is killed with everything it started, the sample it
was on is marked `timeout`, and the rest of its chunk goes to a new worker. A worker that dies
(segfault, os._exit, the OOM killer) marks its sample `crash` the same way. A batch is split
across the workers in contiguous chunks and they run concurrently.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
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

from tuneloop.rewards import isolation
from tuneloop.rewards.base import Sample, Score
from tuneloop.rewards.isolation import SandboxUnavailable

__all__ = ["InProcess", "Sandbox", "SandboxUnavailable"]

log = logging.getLogger(__name__)
_HEADER = struct.Struct(">I")
GRACE_S = 2.0
LOAD_S = 30.0             # importing the user's module may take a while (the worker times it out too)
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
DEFAULT_MEMORY_MB = int(os.environ.get("TUNELOOP_SANDBOX_MEMORY_MB") or 2048)


def scrubbed_env(home: str, paths: list[str]) -> dict[str, str]:
    """The environment a worker gets: nothing secret is inherited."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env.update(HOME=home, TMPDIR=home, PYTHONPATH=os.pathsep.join([isolation.PACKAGE_ROOT, *paths]),
               PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return env


class WorkerGone(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind, self.message = kind, message


class _Worker:
    def __init__(self, index: int, argv: list[str], binds: tuple[str, ...], log_path: str, env: dict[str, str],
                 cwd: str, cgroup: isolation.Cgroup | None, isolated: bool, memory_mb: int):
        self.index, self.binds, self.cgroup, self.isolated, self.memory_mb = index, binds, cgroup, isolated, memory_mb
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.answered = False
        self.proc = subprocess.Popen(cgroup.wrap(argv) if cgroup else argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=cwd, close_fds=True,
                                     start_new_session=True)

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
        msg = json.loads(self._read_exact(n, deadline))
        self.answered = True
        return msg

    def _gone(self) -> WorkerGone:
        try:
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        if self.isolated and code is not None and code > 128 and (code - 128) in signal.Signals._value2member_map_:
            code = -(code - 128)          # the launcher reports a worker killed by signal N as 128 + N
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            if -code == signal.SIGKILL and self.cgroup and self.cgroup.oom_kills():
                return WorkerGone("crash", f"the worker process was killed: out of memory (the sandbox's "
                                           f"{self.memory_mb} MB limit for all its processes)")
            if -code == signal.SIGKILL:
                return WorkerGone("crash", f"the worker process was killed ({name}; out of memory?)")
            return WorkerGone("crash", f"the worker process died ({name})")
        tail = ""
        if not self.answered:             # it died starting: its log says why
            try:
                lines = [ln for ln in Path(self.log_path).read_text(errors="replace").splitlines() if ln.strip()]
                tail = f": {lines[-1][:300]}" if lines else ""
            except OSError:
                pass
        return WorkerGone("crash", f"the worker process exited (code {code}){tail}")

    def kill(self) -> None:
        """Kill the worker and everything it started (its process group, its PID namespace, its cgroup)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self.cgroup:
            self.cgroup.remove()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log.close()


class Sandbox:
    """A pool of sandbox workers. Thread-safe: concurrent `call`s share the workers.

    `allow_unsafe` (or TUNELOOP_UNSAFE_REWARD_SANDBOX=1): where no isolation works, run user code
    with the old process limits only instead of raising `SandboxUnavailable`."""

    def __init__(self, workers: int | None = None, timeout_s: float = 10.0, memory_mb: int | None = None,
                 search_paths: list[str] | None = None, cwd: str | None = None, allow_unsafe: bool = False):
        self.size = max(1, workers or min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.memory_mb = int(memory_mb or DEFAULT_MEMORY_MB)
        self.search_paths = [str(Path(p).resolve()) for p in (search_paths or [os.getcwd()])]
        self.home = tempfile.mkdtemp(prefix="tuneloop-sandbox-")
        try:
            self.isolation = isolation.choose(scrubbed_env(self.home, []), self.home, allow_unsafe)
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        self.isolated = self.isolation != "unsafe"
        self._inner_home = "/tmp" if self.isolated else self.home
        self.cwd = cwd or self.home
        self._explicit_cwd = cwd
        self._env = scrubbed_env(self._inner_home, self.search_paths)
        self._name = f"sbx-{os.getpid()}-{secrets.token_hex(3)}"
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._count = 0
        self._conventions: dict[str, str] = {}
        self._needs: dict[str, tuple[tuple[str, ...], list[str]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="sandbox")
        # Workers die with the thread that started them (PR_SET_PDEATHSIG): one long-lived thread starts them all.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawn")
        self._closed = False
        atexit.register(self.close)

    # ---- workers --------------------------------------------------------------------------------
    def _spawn(self, binds: tuple[str, ...]) -> _Worker:
        with self._lock:
            self._count += 1
            index = self._count
        argv = [sys.executable, "-s", "-m", "tuneloop.rewards.worker", "--memory-mb", str(self.memory_mb),
                "--isolation", self.isolation, "--max-procs", str(isolation.PIDS_MAX)]
        cwd = self._explicit_cwd if self.isolated else self.cwd
        spec = isolation.layout(self.home, binds, cwd)
        cgroup = isolation.Cgroup.create(self._name, f"w{index}", self.memory_mb, isolation.PIDS_MAX)
        if cgroup is None and os.getuid() == 0 and index == 1:
            log.warning("reward sandbox: no writable cgroup, and RLIMIT_NPROC does not bind root: the number of "
                        "processes a reward starts is not capped (memory only per process)")
        try:
            w = self._spawner.submit(_Worker, index, isolation.command(self.isolation, spec, argv), binds,
                                     os.path.join(self.home, f"worker-{index}.log"), self._env, self.home, cgroup,
                                     self.isolated, self.memory_mb).result()
        except BaseException:
            if cgroup:
                cgroup.remove()
            raise
        with self._lock:
            self._all.append(w)
        return w

    def _take(self, binds: tuple[str, ...] | None = None) -> _Worker:
        """An idle worker that sees `binds` (None: any), else a new one; idle workers of other folders
        are stopped once the pool holds twice its size."""
        evict = []
        with self._lock:
            for w in list(reversed(self._idle)):
                if binds is None or w.binds == binds:
                    self._idle.remove(w)
                    if w.proc.poll() is None:
                        return w
                    evict.append(w)
            while self._idle and len(self._all) - len(evict) >= 2 * self.size:
                evict.append(self._idle.pop(0))
        for w in evict:
            self._discard(w)
        return self._spawn(binds or ())

    def _give(self, w: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(w)
                return
        w.kill()

    def _discard(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            if w in self._all:
                self._all.remove(w)

    def _binds(self, target: dict[str, Any]) -> tuple[tuple[str, ...], list[str]]:
        """(the folders a target's worker must see, extra sys.path entries for it)."""
        if not self.isolated:
            return (), []
        key = json.dumps(target, sort_keys=True)
        if key not in self._needs:
            if target["kind"] == "file":
                self._needs[key] = isolation.file_binds(target["path"]), []
            elif target["kind"] == "module":
                self._needs[key] = isolation.module_binds(target["module"], [*self.search_paths, *sys.path])
            else:
                self._needs[key] = (), []
        return self._needs[key]

    def info(self) -> dict[str, Any]:
        """What isolation the workers got: {"isolation": "bwrap"|"namespaces"|"unsafe", "network", "memory_mb",
        "cgroup", "seccomp", "max_procs", "visible", ...}."""
        w = self._take()
        try:
            w.send({"op": "ping"})
            info = w.recv(time.monotonic() + 30.0)
        except WorkerGone:
            self._discard(w)
            raise
        self._give(w)
        visible = [dst for _, dst in isolation.layout(self.home, w.binds)["ro"]] if self.isolated else ["everything"]
        # RLIMIT_NPROC never binds uid 0: as root only the pids cgroup caps processes
        max_procs = isolation.PIDS_MAX if w.cgroup else info.get("max_procs")
        return {"isolation": self.isolation, **info, "cgroup": w.cgroup.kind if w.cgroup else None,
                "max_procs": max_procs, "visible": visible}

    def warm(self, target: dict[str, Any] | None = None) -> None:
        """Start every worker now (instead of on the first call), for `target` if given."""
        binds = self._binds(target)[0] if target else ()
        workers = [self._take(binds) for _ in range(self.size)]
        for w in workers:
            self._give(w)

    # ---- calls ------------------------------------------------------------------------------------
    def convention(self, target: dict[str, Any]) -> str:
        """How the worker will call the target: 'sample', 'batch' or 'grade' ('load' error → 'sample')."""
        if target["kind"] == "code_tests":
            return "sample"
        key = json.dumps(target, sort_keys=True)
        if key not in self._conventions:
            binds, paths = self._binds(target)
            w = self._take(binds)
            try:
                w.send({"op": "load", "target": self._sent(target, paths), "timeout": self.timeout_s})
                res = w.recv(time.monotonic() + max(self.timeout_s, LOAD_S) + GRACE_S)
            except WorkerGone:
                self._discard(w)
                return "sample"
            self._give(w)
            if "convention" not in res:
                return "sample"  # the load error is reported per sample by the calls
            self._conventions[key] = res["convention"]
        return self._conventions[key]

    def _sent(self, target: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        """The target as the worker gets it: a file by its real path (what it sees), a module with its folder."""
        if self.isolated and target["kind"] == "file":
            return {**target, "path": os.path.realpath(target["path"])}
        return {**target, "paths": [*target.get("paths", []), *paths]} if paths else target

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
        binds, paths = self._binds(target)
        sent = self._sent(target, paths)
        while start < len(items):
            w = self._take(binds)
            try:
                w.send({"op": "call", "target": sent, "samples": items[start:], "timeout": timeout})
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
        """Stop every worker and everything they started; remove the sandbox's cgroups and files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._idle, self._all = list(self._all), [], []
        for w in workers:
            w.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._spawner.shutdown(wait=False, cancel_futures=True)
        isolation.remove_sandbox_cgroups(self._name)
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
