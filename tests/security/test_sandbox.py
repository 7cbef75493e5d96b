"""Hostile rewards against the reward sandbox: as a reward file, as a module and as model-written
code under builtin:code_tests, each attack must fail, its Score must say how, and the trainer (this
process) and the host must be untouched. Run for bubblewrap and for the kernel-namespaces launcher,
and once as an unprivileged user, where the machine allows each (else skipped, saying why).

    python -m pytest tests/security/test_sandbox.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tuneloop.rewards import isolation
from tuneloop.rewards.base import Sample
from tuneloop.rewards.sandbox import Sandbox, SandboxUnavailable

ATTACKS = textwrap.dedent('''
    import ctypes, os, signal, socket, time

    libc = ctypes.CDLL(None, use_errno=True)


    def _failed(what):
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


    def read(completion, path):
        with open(path, "rb") as f:
            f.read()
        return 1.0                                   # reached only if the file could be read


    def write(completion, path):
        with open(path, "w") as f:
            f.write("pwned")
        return 1.0


    def host_sysctl(completion):
        os.close(os.open("/proc/sys/kernel/core_pattern", os.O_WRONLY))   # opening proves it; nothing is written
        return 1.0


    def tcp(completion, port):
        socket.create_connection(("127.0.0.1", port), timeout=1).sendall(b"pwned")
        return 1.0


    def udp(completion, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        s.connect(("127.0.0.1", port))
        s.send(b"pwned")
        s.recv(16)                                   # the listener never answers: this fails either way
        return 1.0


    def unix(completion, path):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(1)
        s.connect(path.replace("@", "\\0", 1) if path.startswith("@") else path)
        s.sendall(b"pwned")
        return 1.0


    def setns(completion, path):
        path = path.replace("PPID", str(os.getppid()))
        fd = os.open(path, os.O_RDONLY)
        if libc.setns(fd, 0) != 0:
            _failed(f"setns({path})")
        return 1.0


    def unshare(completion):
        if libc.unshare(0x10000000) != 0:           # CLONE_NEWUSER
            _failed("unshare(CLONE_NEWUSER)")
        return 1.0


    def clone_namespace(completion):
        nr = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
        pid = libc.syscall(nr, 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)   # clone(CLONE_NEWUSER)
        if pid == 0:
            os._exit(0)
        if pid < 0:
            _failed("clone(CLONE_NEWUSER)")
        os.waitpid(pid, 0)
        return 1.0


    def mount(completion):
        if libc.mount(b"none", b"/usr", b"tmpfs", 0, None) != 0:
            _failed("mount")
        return 1.0


    def ptrace(completion):
        if libc.ptrace(16, os.getppid(), None, None) != 0:   # PTRACE_ATTACH
            _failed("ptrace(PTRACE_ATTACH)")
        return 1.0


    def fork_bomb(completion, n=500):
        kids = []
        try:
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                kids.append(pid)
        except OSError as e:
            raise OSError(e.errno, f"fork failed after {len(kids)} processes: {e.strerror}") from None
        finally:
            for pid in kids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        return float(len(kids))


    def memory(completion):
        first = bytearray(1536 * 2**20)              # bytearray fills its memory: every page is touched
        second = bytearray(1536 * 2**20)
        return float(len(first) + len(second))


    def memory_two_processes(completion):
        block = bytearray(1536 * 2**20)
        pid = os.fork()
        if pid == 0:
            del block                                # back under RLIMIT_AS: only the cgroup can stop this one
            other = bytearray(1536 * 2**20)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise MemoryError(f"the second 1.5 GB process failed (wait status {status})")
        return float(len(block))


    def kill_parent(completion):
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(0.3)
        return 1.0


    def kill_everything(completion):
        os.kill(-1, signal.SIGKILL)
        time.sleep(0.3)
        return 1.0


    def detach(completion, marker):
        """A double-forked, setsid child that sleeps, then writes a marker (its cmdline names it)."""
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sh", ["/bin/sh", "-c", f"sleep 1.5; echo pwned > {marker}", marker])
            os._exit(0)
        os.waitpid(pid, 0)
        return 1.0


    def detach_and_hang(completion, marker):
        detach(completion, marker)
        while True:                                  # swallows the worker's alarm: the sandbox must kill it
            try:
                time.sleep(10)
            except BaseException:
                pass
''')


def unavailable(reason: str) -> None:
    """Skip where this machine cannot give the isolation under test; fail in CI, whose machines can
    (root, user namespaces, a writable cgroup), so a broken launcher or cgroup code is never a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"in CI this must run: {reason}")
    pytest.skip(reason)


# ---- the host side: files, listeners, helpers --------------------------------------------------------
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Secrets and listeners outside the sandbox, a reward file, a reward package, a working folder."""
    root = tmp_path_factory.mktemp("host")
    home = root / "tuneloop-home"
    home.mkdir()
    (home / "tuneloop.db").write_text("SECRET DATABASE")
    (root / "rewards").mkdir()
    (root / "rewards" / "attacks.py").write_text(ATTACKS)
    pkg = root / "modroot" / "evilpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "attacks.py").write_text(ATTACKS)
    (root / "modroot" / "secret.txt").write_text("next to the package, not in it")
    (root / "cwd").mkdir()
    (root / "cwd" / "cwd-secret.txt").write_text("the trainer's working folder")
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(root / "listener.sock"))
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"tuneloop-sandbox-test-{os.getpid()}"
    abstract.bind("\0" + abstract_name)
    abstract.listen()
    for s in (tcp, udp, unix, abstract):
        s.setblocking(False)
    saved_env, saved_cwd = os.environ.get("TUNELOOP_HOME"), os.getcwd()
    os.environ["TUNELOOP_HOME"] = str(home)
    os.chdir(root / "cwd")
    yield {"root": root, "home": home, "tcp": tcp, "udp": udp, "unix": unix, "abstract": abstract,
           "abstract_name": abstract_name}
    os.chdir(saved_cwd)
    if saved_env is None:
        os.environ.pop("TUNELOOP_HOME", None)
    else:
        os.environ["TUNELOOP_HOME"] = saved_env
    for s in (tcp, udp, unix, abstract):
        s.close()


def nothing_received(host) -> None:
    for name in ("tcp", "unix", "abstract"):
        with pytest.raises(BlockingIOError):
            host[name].accept()
    with pytest.raises(BlockingIOError):
        host["udp"].recvfrom(64)


def open_sandbox(mode: str, **kwargs) -> Sandbox:
    saved = os.environ.get("TUNELOOP_SANDBOX_ISOLATION")
    os.environ["TUNELOOP_SANDBOX_ISOLATION"] = mode
    try:
        return Sandbox(**kwargs)
    except SandboxUnavailable as e:
        unavailable(f"{mode} isolation does not work on this machine: {e.message}")
    finally:
        if saved is None:
            os.environ.pop("TUNELOOP_SANDBOX_ISOLATION")
        else:
            os.environ["TUNELOOP_SANDBOX_ISOLATION"] = saved


@pytest.fixture(scope="module", params=["bwrap", "namespaces"])
def box(request, host):
    sandbox = open_sandbox(request.param, workers=2, timeout_s=10.0, memory_mb=2048,
                           search_paths=[os.getcwd(), str(host["root"] / "modroot")])
    assert sandbox.info()["isolation"] == request.param
    yield sandbox
    sandbox.close()


def target(host, kind: str, fn: str) -> dict:
    if kind == "file":
        return {"kind": "file", "path": str(host["root"] / "rewards" / "attacks.py"), "function": fn}
    return {"kind": "module", "module": "evilpkg.attacks", "function": fn}


def attack(box, host, kind: str, fn: str, **row):
    [score] = box.call(target(host, kind, fn), [Sample("s", [], "x", row)])
    return score


def refused(score, *errors: str) -> None:
    """The attack raised: its Score is an exception naming one of `errors`."""
    assert score.value is None and score.error.kind == "exception", score
    assert any(e in score.error.message for e in errors), score.error.message


def processes_with(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


KINDS = ["file", "module"]


# ---- reading and writing outside ------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_secrets_on_the_host_cannot_be_read(box, host, kind):
    secrets = {"/etc/shadow": "/etc/shadow", "database": str(host["home"] / "tuneloop.db"),
               "trainer environment": f"/proc/{os.getpid()}/environ",
               "trainer working folder": str(host["root"] / "cwd" / "cwd-secret.txt"),
               "next to the module": str(host["root"] / "modroot" / "secret.txt")}
    home_files = [p for p in (Path.home() / ".ssh" / "id_rsa", Path.home() / ".bashrc", Path.home() / ".profile")
                  if p.exists()]
    if home_files:
        secrets["home folder"] = str(home_files[0])
    for what, path in secrets.items():
        assert Path(path).exists() or what in ("/etc/shadow", "trainer environment"), what
        refused(attack(box, host, kind, "read", path=path), "FileNotFoundError", "PermissionError")


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_outside_can_be_written(box, host, kind):
    own = str(host["root"] / ("rewards" if kind == "file" else "modroot/evilpkg") / "pwned")
    for path in (str(host["home"] / "pwned"), str(host["root"] / "cwd" / "pwned"), own, "/usr/pwned",
                 "/etc/pwned", "/pwned"):
        refused(attack(box, host, kind, "write", path=path), "FileNotFoundError", "Read-only file system",
                "PermissionError")
        assert not Path(path).exists()
    refused(attack(box, host, kind, "host_sysctl"), "Read-only file system", "PermissionError")
    assert sorted(p.name for p in host["home"].iterdir()) == ["tuneloop.db"]
    assert (host["home"] / "tuneloop.db").read_text() == "SECRET DATABASE"


# ---- network -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_no_connection_reaches_the_host(box, host, kind):
    refused(attack(box, host, kind, "tcp", port=host["tcp"].getsockname()[1]),
            "ConnectionRefusedError", "Network is unreachable")
    refused(attack(box, host, kind, "udp", port=host["udp"].getsockname()[1]),
            "ConnectionRefusedError", "Network is unreachable", "TimeoutError", "timed out")
    refused(attack(box, host, kind, "unix", path=str(host["root"] / "listener.sock")), "FileNotFoundError")
    refused(attack(box, host, kind, "unix", path="@" + host["abstract_name"]), "ConnectionRefusedError")
    nothing_received(host)


# ---- namespaces, syscalls -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_no_way_back_into_the_host_namespaces(box, host, kind):
    for ns in ("net", "mnt", "pid", "user", "ipc", "uts"):
        for path in (f"/proc/PPID/ns/{ns}", f"/proc/1/ns/{ns}"):
            refused(attack(box, host, kind, "setns", path=path), "Operation not permitted")
    refused(attack(box, host, kind, "setns", path=f"/proc/{os.getpid()}/ns/net"), "FileNotFoundError")
    for fn in ("unshare", "clone_namespace", "mount", "ptrace"):
        refused(attack(box, host, kind, fn), "Operation not permitted")


# ---- resources -----------------------------------------------------------------------------------------
def test_a_fork_bomb_stops_at_the_cap(box, host):
    if box.info()["max_procs"] is None:
        unavailable("root without a writable cgroup: nothing caps processes (RLIMIT_NPROC does not bind uid 0)")
    score = attack(box, host, "file", "fork_bomb", n=500)
    refused(score, "fork failed after")
    made = int(score.error.message.split("after ")[1].split()[0])
    assert made <= isolation.PIDS_MAX < 500
    assert attack(box, host, "file", "read", path=str(host["root"] / "rewards" / "attacks.py")).value == 1.0


def test_memory_is_capped_for_the_whole_worker(box, host):
    score = attack(box, host, "file", "memory")
    assert score.value is None and score.error.kind == "memory", score
    if box.info()["cgroup"] is None:
        unavailable("no writable cgroup here: only RLIMIT_AS caps memory, per process")
    score = attack(box, host, "file", "memory_two_processes")
    assert score.value is None and score.error.kind in ("memory", "crash"), score
    assert "out of memory" in score.error.message or "MemoryError" in score.error.message


# ---- the trainer -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_killing_the_parent_or_everything_hurts_only_the_sandbox(box, host, kind):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # the worker's parent is the sandbox's own PID 1, which ignores signals from inside; kill(-1)
        # finds no other process it may signal (ESRCH)
        score = attack(box, host, kind, "kill_parent")
        assert score.value == 1.0 or score.error.kind == "crash", score
        score = attack(box, host, kind, "kill_everything")
        assert score.value == 1.0 or score.error.kind == "crash" or "No such process" in score.error.message, score
        assert bystander.poll() is None                      # this process and its other children live on
        assert attack(box, host, kind, "read", path=str(host["root"] / "rewards" / "attacks.py")).value in (1.0, None)
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.parametrize("mode", ["bwrap", "namespaces"])
def test_nothing_outlives_the_sandbox(host, mode):
    sandbox = open_sandbox(mode, workers=1, timeout_s=5.0)
    marker = str(host["root"] / f"detached-{mode}-marker")
    started = time.monotonic()
    try:
        [score] = sandbox.call(target(host, "file", "detach"), [Sample("s", [], "x", {"marker": marker})])
        assert score.value == 1.0, score
        deadline = time.monotonic() + 2.0                     # the child execs its shell asynchronously
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(marker), "the detached child should be running until the sandbox closes"
    finally:
        sandbox.close()
    deadline = time.monotonic() + 2.0
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    found = isolation._cgroup_bases()
    assert not [b for b in (found[1].values() if found else ()) if os.path.exists(os.path.join(b, sandbox._name))]
    time.sleep(max(0.0, started + 2.0 - time.monotonic()))   # past the moment it would have written
    assert not Path(marker).exists()


def test_a_timeout_kills_everything_the_reward_started(box, host):
    marker = str(host["root"] / f"timeout-marker-{id(box)}")
    [score] = box.call(target(host, "file", "detach_and_hang"), [Sample("s", [], "x", {"marker": marker})],
                       timeout_s=0.3)
    assert score.error.kind == "timeout" and "worker was killed" in score.error.message
    deadline = time.monotonic() + 2.0
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


TRAINER = textwrap.dedent('''
    import sys, time
    from tuneloop.rewards.base import Sample
    from tuneloop.rewards.sandbox import Sandbox
    box = Sandbox(workers=1, timeout_s=5.0)
    target = {"kind": "file", "path": sys.argv[1], "function": "detach"}
    [s] = box.call(target, [Sample("s", [], "x", {"marker": sys.argv[2]})])
    print(s.value, flush=True)
    time.sleep(60)
''')


@pytest.mark.parametrize("mode", ["bwrap", "namespaces"])
def test_the_workers_die_with_the_trainer(host, mode):
    open_sandbox(mode, workers=1).close()                     # skips where this isolation does not work
    marker = str(host["root"] / f"trainer-{mode}-marker")
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(host["root"] / "rewards" / "attacks.py"), marker],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TUNELOOP_SANDBOX_ISOLATION": mode,
                                    "TMPDIR": str(host["root"])})   # the dead trainer's files stay in pytest's tmp
    try:
        assert trainer.stdout.readline().strip() == "1.0"
        deadline = time.monotonic() + 2.0
        while not processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(marker)
    finally:
        trainer.kill()                                         # SIGKILL: no atexit, no close()
        trainer.wait()
    deadline = time.monotonic() + 3.0
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
    isolation.sweep_stale_cgroups()                            # what the next sandbox does for the dead one
    found = isolation._cgroup_bases()
    for base in (found[1].values() if found else ()):
        assert not [n for n in os.listdir(base) if n.startswith(f"sbx-{trainer.pid}-")]


# ---- model-written code under builtin:code_tests ---------------------------------------------------------
def code_tests(box, body: str, timeout: float = 5.0):
    code = ATTACKS + "\n\ndef attack():\n" + textwrap.indent(textwrap.dedent(body), "    ")
    [score] = box.call({"kind": "code_tests"}, [Sample("s", [], code, {"tests": ["assert attack() == 1.0"]})],
                       timeout_s=timeout)
    return score


def test_model_written_code_fails_every_attack(box, host):
    attacks = [f"return read(None, {str(host['home'] / 'tuneloop.db')!r})",
               "return read(None, '/etc/shadow')",
               f"return write(None, {str(host['home'] / 'pwned')!r})",
               f"return tcp(None, {host['tcp'].getsockname()[1]})",
               f"return unix(None, {str(host['root'] / 'listener.sock')!r})",
               "return setns(None, '/proc/1/ns/net')",
               "return unshare(None)",
               "return float(fork_bomb(None, 500) >= 500)",
               "return kill_parent(None)",
               "return kill_everything(None)"]
    for body in attacks:
        score = code_tests(box, body)
        assert score.value == 0.0 and score.metrics.get("tests_passed", 0.0) == 0.0, (body, score)
    assert not (host["home"] / "pwned").exists()
    nothing_received(host)


def test_model_written_code_leaves_nothing_behind(box, host):
    marker = str(host["root"] / f"code-tests-marker-{id(box)}")
    score = code_tests(box, f"detach(None, {marker!r})\nreturn 1.0")
    assert score.value == 1.0                               # the test passed; the child it left is gone already
    left = processes_with(marker)
    assert left == [], [Path(f"/proc/{p}/status").read_text() for p in left]


# ---- as an unprivileged user ---------------------------------------------------------------------------
UNPRIVILEGED = textwrap.dedent('''
    import json, os, sys
    from tuneloop.rewards.base import Sample
    from tuneloop.rewards.sandbox import Sandbox, SandboxUnavailable
    reward, secret = sys.argv[1], sys.argv[2]
    out = {}
    for mode in ("bwrap", "namespaces"):
        os.environ["TUNELOOP_SANDBOX_ISOLATION"] = mode
        try:
            box = Sandbox(workers=1, timeout_s=10.0, memory_mb=2048)
        except SandboxUnavailable as e:
            out[mode] = {"unavailable": e.message}
            continue
        def run(fn, **row):
            [s] = box.call({"kind": "file", "path": reward, "function": fn}, [Sample("s", [], "x", row)])
            return s.to_dict()
        out[mode] = {"info": box.info(), "shadow": run("read", path="/etc/shadow"), "secret": run("read", path=secret),
                     "setns": run("setns", path="/proc/PPID/ns/net"), "fork_bomb": run("fork_bomb", n=500),
                     "memory": run("memory"), "kill_parent": run("kill_parent"), "after": run("read", path=reward)}
        box.close()
    print(json.dumps(out))
''')


USABLE = ("import os, sys; import tuneloop.rewards.sandbox; "
          "assert all(os.access(p, os.R_OK | os.X_OK) for p in (os.path.realpath(sys.executable), sys.base_prefix))")


def unprivileged_python() -> list[str] | None:
    """An interpreter user nobody can run tuneloop's sandbox with (this one, or the system's)."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        return None
    drop = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    for python in (sys.executable, "/usr/bin/python3"):
        check = subprocess.run([*drop, python, "-c", USABLE], capture_output=True,
                               env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": isolation.PACKAGE_ROOT},
                               cwd="/", timeout=30)
        if check.returncode == 0:
            return [*drop, python]
    return None


def test_as_an_unprivileged_user(tmp_path_factory):
    command = unprivileged_python()
    if command is None:
        # where the checkout lives decides this (a mode-700 folder hides its .venv from uid 65534), not the
        # sandbox: a plain skip, in CI too
        pytest.skip("needs root (to drop to uid 65534 with setpriv) and a Python that uid 65534 can run "
                    f"with tuneloop importable ({sys.executable} and /usr/bin/python3 are not)")
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="tuneloop-unprivileged-"))   # readable by uid 65534, unlike pytest's
    try:
        shared.chmod(0o755)
        for sub in ("rewards", "secret"):
            (shared / sub).mkdir(mode=0o755)
        (shared / "rewards" / "attacks.py").write_text(ATTACKS)
        (shared / "secret" / "data").write_text("outside the reward's folder")
        res = subprocess.run([*command, "-c", UNPRIVILEGED, str(shared / "rewards" / "attacks.py"),
                              str(shared / "secret" / "data")],
                             capture_output=True, text=True, cwd="/", timeout=100,
                             env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": isolation.PACKAGE_ROOT})
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    ran = {mode: r for mode, r in out.items() if "unavailable" not in r}
    if not ran:
        unavailable(f"no isolation works for uid 65534 here: {out}")
    for mode, r in ran.items():
        assert r["info"]["isolation"] == mode
        for name in ("shadow", "secret"):
            assert r[name]["error"]["kind"] == "exception" and "FileNotFoundError" in r[name]["error"]["message"]
        assert "Operation not permitted" in r["setns"]["error"]["message"]
        made = int(r["fork_bomb"]["error"]["message"].split("after ")[1].split()[0])
        assert made <= isolation.PIDS_MAX
        assert r["memory"]["error"]["kind"] == "memory"
        assert r["kill_parent"]["value"] == 1.0 or r["kill_parent"]["error"]["kind"] == "crash"
        assert r["after"]["value"] == 1.0

