"""python -m tuneloop.rewards.worker --memory-mb 2048 --isolation bwrap   (started by `sandbox.Sandbox`)

A sandbox worker: loads user reward code and calls it, one process apart from the trainer. It
speaks length-prefixed JSON on stdin and on a private copy of stdout (so what user code prints
goes to the worker log, never into the protocol). The sandbox starts it already isolated
(`--isolation bwrap|namespaces`: its own namespaces, a read-only view of the filesystem, no
capabilities; see `tuneloop.rewards.isolation`) with a scrubbed environment. Before it reads a
message it caps its address space (RLIMIT_AS), its process count (RLIMIT_NPROC), file sizes and
core dumps, then installs the seccomp filter; with `--isolation unsafe` it also leaves the network
where the OS allows it (else sockets refuse to connect). Every call runs under a SIGALRM timer;
code_tests runs the completion's code in a forked child per sample, so model-written code cannot
touch the worker, and kills whatever that code left behind.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import json
import os
import re
import resource
import signal
import socket
import struct
import sys
import time
import traceback
from typing import Any, Callable

from tuneloop.rewards import isolation
from tuneloop.rewards.base import Score, coerce
from tuneloop.rewards.calling import call_batch, call_one, convention

_HEADER = struct.Struct(">I")
_OWN_FILES = (os.path.dirname(os.path.abspath(__file__)),)


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so user `except Exception:` does not swallow it."""


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def timed(fn: Callable[[], Any], seconds: float) -> Any:
    signal.setitimer(signal.ITIMER_REAL, max(0.001, seconds))
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# ---- isolation ------------------------------------------------------------------------------------
def limit_memory(memory_mb: int) -> None:
    if memory_mb > 0:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 2**20, 256 * 2**20))


def limit_processes(max_procs: int, own_user_namespace: bool) -> int:
    """RLIMIT_NPROC counts every process of the real uid: in the worker's own user namespace only its
    own, else all of the user's on the machine (so the cap is set above the current count). The
    kernel never applies it to uid 0 (root relies on the sandbox's pids cgroup). Returns the limit."""
    limit = max_procs
    if not own_user_namespace:
        uid = os.getuid()
        mine = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/status") as f:
                    mine += any(line.startswith("Uid:") and line.split()[1] == str(uid) for line in f)
            except OSError:
                pass
        limit += mine
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return limit


def isolate_network() -> str:
    """Leave the network: 'namespace' (a fresh, empty network namespace), else 'python' (sockets
    refuse to connect or resolve names; code using raw syscalls could still reach out)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for flags in (0x40000000, 0x10000000 | 0x40000000):  # CLONE_NEWNET, then CLONE_NEWUSER | CLONE_NEWNET
            if libc.unshare(flags) == 0:
                return "namespace"
    except Exception:
        pass

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the reward sandbox")

    socket.socket.connect = refuse           # type: ignore[method-assign]
    socket.socket.connect_ex = refuse        # type: ignore[method-assign]
    socket.socket.sendto = refuse            # type: ignore[method-assign]
    socket.create_connection = refuse        # type: ignore[assignment]
    socket.getaddrinfo = refuse              # type: ignore[assignment]
    return "python"


# ---- loading user code ----------------------------------------------------------------------------
_loaded: dict[str, Callable] = {}


def _load(target: dict[str, Any]) -> Callable:
    kind = target["kind"]
    for p in target.get("paths") or ():
        if p not in sys.path:
            sys.path.insert(0, p)
    if kind == "file":
        path = target["path"]
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = "tuneloop_reward_" + hashlib.sha1(path.encode()).hexdigest()[:10]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    elif kind == "module":
        module = importlib.import_module(target["module"])
    elif kind == "source":
        module = type(sys)("tuneloop_grader")
        exec(compile(target["source"], f"<{target.get('name') or 'grader'}>", "exec"), module.__dict__)
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    fn = getattr(module, target["function"], None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise AttributeError(f"{target['function']!r} is not defined there (callables: {', '.join(found) or 'none'})")
    if not callable(fn):
        raise TypeError(f"{target['function']!r} is {type(fn).__name__}, not a function")
    return fn


def _key(target: dict[str, Any]) -> str:
    extra = ""
    if target["kind"] == "file":
        try:
            extra = str(os.stat(target["path"]).st_mtime_ns)
        except OSError:
            pass
    return json.dumps(target, sort_keys=True) + extra


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this worker's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_OWN_FILES)]
    lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames)
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def _failure(exc: BaseException, timeout: float, memory_mb: int) -> Score:
    if isinstance(exc, _Timeout):
        return Score.failed("timeout", f"timed out after {timeout:g} s")
    if isinstance(exc, MemoryError):
        return Score.failed("memory", f"MemoryError: exceeded the sandbox memory limit ({memory_mb} MB)",
                            _user_traceback(exc))
    text = str(exc)
    return Score.failed("exception", f"{type(exc).__name__}: {text}" if text else type(exc).__name__,
                        _user_traceback(exc))


# ---- code_tests: model-written code in a forked child -----------------------------------------------
_FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S)
TEST_COLUMNS = ("tests", "test_list", "test_cases", "unit_tests", "test")


def extract_code(completion: str) -> str:
    blocks = _FENCE.findall(completion)
    return "\n".join(blocks) if blocks else completion


def split_tests(tests: Any) -> list[str]:
    """A list of test snippets, or one script: its top-level asserts are the tests; the other
    statements (imports, helpers) run before every test."""
    if isinstance(tests, list):
        return [str(t) for t in tests]
    text = str(tests)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [text]
    setup = [n for n in tree.body if not isinstance(n, ast.Assert)]
    asserts = [n for n in tree.body if isinstance(n, ast.Assert)]
    if not asserts:
        return [text]
    prefix = "\n".join(ast.unparse(n) for n in setup)
    return [(prefix + "\n" if prefix else "") + ast.unparse(a) for a in asserts]


def _run_tests_child(code: str, tests: list[str], entry_point: str | None, timeout: float) -> dict[str, int]:
    ns: dict[str, Any] = {"__name__": "__main__"}
    try:
        timed(lambda: exec(compile(code, "<completion>", "exec"), ns), timeout)
    except BaseException:
        return {"passed": 0, "compiled": 0}
    passed = 0
    for test in tests:
        local = dict(ns)
        try:
            def run(test=test, local=local):
                exec(compile(test, "<test>", "exec"), local)
                if entry_point and callable(local.get("check")) and entry_point in local and "check(" not in test:
                    local["check"](local[entry_point])
            timed(run, timeout)
            passed += 1
        except BaseException:
            pass
    return {"passed": passed, "compiled": 1}


_OWN_PID_NAMESPACE = False   # set by serve(): the worker is PID 2 of its own PID namespace


def _kill_leftovers() -> None:
    """Kill every process model code left behind (kill(-1) spares only PID 1 and this worker) and wait
    until they are gone (SIGKILL is delivered asynchronously), reaping this worker's own children."""
    if not _OWN_PID_NAMESPACE:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        if not [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", "2") and not _zombie(p)]:
            return
        time.sleep(0.005)


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def code_tests(s: dict[str, Any], timeout: float) -> Score:
    row = s.get("row") or {}
    raw = next((row[c] for c in TEST_COLUMNS if row.get(c)), None)
    if raw is None:
        return Score.failed("config", "builtin:code_tests needs the row's unit tests in a column named "
                                      + " / ".join(TEST_COLUMNS))
    tests = split_tests(raw)
    total = len(tests)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: runs model-written code, reports counts, exits without cleanup
        try:
            os.close(r)
            sys.stdout = sys.stderr
            res = _run_tests_child(extract_code(s["completion"]), tests, row.get("entry_point"), timeout)
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        def read_all():
            while True:
                b = os.read(r, 4096)
                if not b:
                    return
                chunks.append(b)
        timed(read_all, timeout * (total + 1) + 1.0)
    except _Timeout:
        pass
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        _kill_leftovers()
    try:
        res = json.loads(b"".join(chunks))
    except ValueError:  # the code killed its process or hung: every test failed
        res = {"passed": 0, "compiled": 0}
    return Score(res["passed"] / total, {"tests_passed": float(res["passed"]), "tests_total": float(total),
                                         "compiled": float(res["compiled"])})


# ---- protocol -----------------------------------------------------------------------------------
def _read(fh) -> Any:
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    return json.loads(fh.read(n))


def _write(fd: int, obj: Any) -> None:
    data = json.dumps(obj, default=str).encode()
    data = _HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def lock_down(mode: str, memory_mb: int, max_procs: int) -> dict[str, Any]:
    """Limits, then (unsafe mode) leave the network, then seccomp: before any user code loads."""
    global _OWN_PID_NAMESPACE
    isolated = mode != "unsafe"
    limit_memory(memory_mb)
    nproc = limit_processes(max_procs, own_user_namespace=isolated)
    network = "namespace" if isolated else isolate_network()
    try:
        isolation.lock_down()
        seccomp = True
    except OSError as e:
        if isolated:
            raise                # the launchers were probed with this very call: refuse to go on without it
        print(f"tuneloop sandbox worker: no seccomp filter ({e})", file=sys.stderr, flush=True)
        seccomp = False
    _OWN_PID_NAMESPACE = isolated and os.getpid() == 2
    return {"isolation": mode, "network": network, "seccomp": seccomp, "max_procs": nproc if os.getuid() else None}


def serve(memory_mb: int, mode: str = "unsafe", max_procs: int = isolation.PIDS_MAX) -> None:
    out = os.dup(1)              # the protocol's own fd; fd 1 now goes where stderr goes
    os.dup2(2, 1)
    stdin = os.fdopen(0, "rb", buffering=0)
    signal.signal(signal.SIGALRM, _on_alarm)
    locked = lock_down(mode, memory_mb, max_procs)
    while True:
        msg = _read(stdin)
        if msg is None:
            return
        op = msg.get("op")
        if op == "ping":
            _write(out, {"ok": True, **locked, "memory_mb": memory_mb, "pid": os.getpid()})
            continue
        target, timeout = msg["target"], float(msg.get("timeout") or 10.0)
        samples = msg.get("samples") or []
        if target["kind"] == "code_tests":
            for i, s in enumerate(samples):
                _write(out, {"i": i, "score": code_tests(s, timeout).to_dict()})
            _write(out, {"done": True})
            continue
        key = _key(target)
        try:
            fn = _loaded.get(key) or timed(lambda: _load(target), max(timeout, 30.0))
            _loaded[key] = fn
            conv = convention(fn)
        except BaseException as e:  # noqa: BLE001 - any failure to load is reported, not raised
            where = target.get("path") or target.get("module") or target.get("name") or "grader"
            fail = _failure(e, max(timeout, 30.0), memory_mb)
            msg_text = f"cannot load {where}:{target.get('function')}: {fail.error.message}"
            fail = Score.failed("load", msg_text, fail.error.traceback)
            if op == "load":
                _write(out, {"error": fail.error.to_dict()})
                continue
            for i in range(len(samples)):
                _write(out, {"i": i, "score": fail.to_dict()})
            _write(out, {"done": True})
            continue
        if op == "load":
            _write(out, {"convention": conv})
            continue
        _write(out, {"loaded": True})  # from here on the parent times each sample
        if conv == "batch":
            try:
                scores = timed(lambda: call_batch(fn, samples), timeout * max(1, len(samples)))
            except BaseException as e:  # noqa: BLE001
                scores = [_failure(e, timeout * max(1, len(samples)), memory_mb)] * len(samples)
            for i, sc in enumerate(scores):
                _write(out, {"i": i, "score": sc.to_dict()})
        else:
            for i, s in enumerate(samples):
                try:
                    sc = coerce(timed(lambda s=s: call_one(fn, s, conv), timeout))
                except BaseException as e:  # noqa: BLE001
                    sc = _failure(e, timeout, memory_mb)
                _write(out, {"i": i, "score": sc.to_dict()})
        _write(out, {"done": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tuneloop.rewards.worker")
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--isolation", choices=isolation.MODES, default="unsafe",
                        help="how the sandbox started this worker (bwrap and namespaces: already isolated)")
    parser.add_argument("--max-procs", type=int, default=isolation.PIDS_MAX)
    args = parser.parse_args(argv)
    serve(args.memory_mb, args.isolation, args.max_procs)


if __name__ == "__main__":
    main()
