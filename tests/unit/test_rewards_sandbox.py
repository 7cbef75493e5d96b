"""The sandbox: user reward code in isolated worker processes, with timeouts, a memory limit, no
secrets and no network; failures become per-sample errors and the workers recover; no isolation
means no user code unless asked. The seccomp program and what a worker sees, checked without
processes. Verification catches each broken reward on sample rows. (Starts real worker processes:
about a second per test; tests/security/test_sandbox.py attacks the isolation itself.)"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import textwrap
import time

import pytest

from tuneloop.errors import ValidationError
from tuneloop.rewards import isolation
from tuneloop.rewards.base import Sample
from tuneloop.rewards.functions import RewardContext
from tuneloop.rewards.sandbox import Sandbox, SandboxUnavailable
from tuneloop.rewards.verify import verify_rows

P = [{"role": "user", "content": "What is 2 + 2?"}]
USER_CODE = textwrap.dedent("""
    import math, os, time

    def good(completion, answer):
        return float(completion.strip() == answer)

    def item(completion, answer, id):
        return {"id": id, "aggregate_reward_score": float(completion == answer),
                "metrics_list": [{"name": "chars", "value": len(completion), "type": "Metric"}]}

    def trl_style(prompts, completions, answer, **kwargs):
        return [float(c[0]["content"] == a) for c, a in zip(completions, answer)]

    def kwargs_style(**row):
        return float(row["completion"] == row["answer"]) + 0.5 * (row["prompt"][0]["role"] == "user")

    def raises(completion):
        return {"a": 1}["missing"]

    def hangs(completion):
        while True:
            pass

    def stubborn(completion):
        while True:
            try:
                time.sleep(10)
            except BaseException:
                pass

    def string(completion):
        return "high"

    def nan(completion):
        return math.nan

    def huge(completion):
        block = bytearray(10 * 2**30)
        return float(len(block))

    def dies(completion):
        if completion == "die":
            os._exit(3)
        return 1.0

    def chatty(completion):
        print("debug output that must not break the protocol" * 100)
        return 1.0

    def env(completion):
        leaked = [k for k in os.environ if k in ("MY_SECRET_KEY", "HF_TOKEN") or k.startswith("TUNELOOP")]
        return {"aggregate_reward_score": float(not leaked), "metrics_list": [{"name": "env_vars", "value": len(os.environ)}]}

    def slow(completion):
        time.sleep(0.4)
        return 1.0

    def connect(completion, port):
        import socket
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return 1.0
""")


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "user_rewards.py"
    path.write_text(USER_CODE)
    return path


@pytest.fixture(scope="module")
def box(code):
    sandbox = Sandbox(workers=2, timeout_s=1.0, memory_mb=1024, search_paths=[str(code.parent)])
    yield sandbox
    sandbox.close()


def run(box, code, fn, completions=("4", "5"), row=None, timeout=None):
    samples = [Sample(f"s{i}", P, c, dict(row or {"answer": "4"})) for i, c in enumerate(completions)]
    return box.call({"kind": "file", "path": str(code), "function": fn}, samples, timeout_s=timeout)


def test_calling_conventions(box, code):
    assert [s.value for s in run(box, code, "good")] == [1.0, 0.0]
    assert [s.value for s in run(box, code, "trl_style")] == [1.0, 0.0]
    assert [s.value for s in run(box, code, "kwargs_style")] == [1.5, 0.5]
    scores = run(box, code, "item")
    assert [s.value for s in scores] == [1.0, 0.0] and scores[0].metrics == {"chars": 1.0}


@pytest.mark.parametrize("fn, kind, message", [
    ("raises", "exception", "KeyError: 'missing'"),
    ("string", "type", "reward function returned str 'high'"),
    ("nan", "nan", "nan, not a finite number"),
    ("huge", "memory", "MemoryError: exceeded the sandbox memory limit (1024 MB)"),
])
def test_broken_functions_become_sample_errors(box, code, fn, kind, message):
    scores = run(box, code, fn)
    assert all(s.value is None and s.error.kind == kind for s in scores), scores
    assert message in scores[0].error.message
    if kind == "exception":
        assert 'user_rewards.py", line' in scores[0].error.traceback and "worker.py" not in scores[0].error.traceback
    assert [s.value for s in run(box, code, "good")] == [1.0, 0.0]  # the workers are still usable


def test_hangs_time_out_and_workers_recover(box, code):
    t = time.monotonic()
    scores = run(box, code, "hangs", completions=["a", "b", "c", "d"], timeout=0.5)
    assert all(s.error.kind == "timeout" for s in scores) and time.monotonic() - t < 5
    scores = run(box, code, "stubborn", completions=["a"], timeout=0.3)  # swallows the alarm: the worker is killed
    assert scores[0].error.kind == "timeout" and "worker was killed" in scores[0].error.message
    assert [s.value for s in run(box, code, "good")] == [1.0, 0.0]


def test_a_dying_worker_fails_only_its_sample(box, code):
    scores = run(box, code, "dies", completions=["ok", "die", "ok", "ok"])
    assert [s.value for s in scores] == [1.0, None, 1.0, 1.0]
    assert scores[1].error.kind == "crash" and "exited (code 3)" in scores[1].error.message


def test_output_does_not_break_the_protocol(box, code):
    assert [s.value for s in run(box, code, "chatty")] == [1.0, 1.0]


def test_no_secrets_and_no_network(box, code, monkeypatch):
    monkeypatch.setenv("MY_SECRET_KEY", "s3cret")
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    fresh = Sandbox(workers=1, timeout_s=2.0, search_paths=[str(code.parent)])
    try:
        [s] = fresh.call({"kind": "file", "path": str(code), "function": "env"}, [Sample("1", P, "x")])
        assert s.value == 1.0 and s.metrics["env_vars"] < 20
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        [s] = fresh.call({"kind": "file", "path": str(code), "function": "connect"},
                         [Sample("1", P, "x", {"port": port})])
        server.close()
        assert s.value is None and s.error.kind == "exception", s
        info = fresh.info()
        assert info["isolation"] in ("bwrap", "namespaces") and info["network"] == "namespace" and info["seccomp"]
        assert str(code.parent) in info["visible"] and os.getcwd() not in info["visible"]
    finally:
        fresh.close()


def test_without_isolation_user_code_is_refused_unless_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("TUNELOOP_SANDBOX_ISOLATION", raising=False)
    monkeypatch.delenv("TUNELOOP_UNSAFE_REWARD_SANDBOX", raising=False)
    monkeypatch.setattr(isolation, "probe", lambda mode, env, home: f"{mode}: does not work here")
    with pytest.raises(SandboxUnavailable) as e:
        Sandbox(workers=1)
    assert isinstance(e.value, ValidationError) and "bwrap: does not work here; namespaces: " in e.value.message
    assert "apt-get install bubblewrap" in e.value.hint and "--unsafe-reward-sandbox" in e.value.hint
    for box in (lambda: Sandbox(workers=1, allow_unsafe=True),
                lambda: (monkeypatch.setenv("TUNELOOP_UNSAFE_REWARD_SANDBOX", "1"), Sandbox(workers=1))[1]):
        with box() as unsafe:
            assert unsafe.info()["isolation"] == "unsafe"
            path = tmp_path / "r.py"
            path.write_text("def f(completion):\n    return 2.0\n")
            assert [s.value for s in unsafe.call({"kind": "file", "path": str(path), "function": "f"},
                                                 [Sample("1", P, "x")])] == [2.0]
    monkeypatch.setenv("TUNELOOP_SANDBOX_ISOLATION", "chroot")
    with pytest.raises(ValidationError, match="not one of bwrap, namespaces, unsafe"):
        Sandbox(workers=1)


def run_seccomp(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """Evaluate a classic-BPF seccomp program on one syscall (the few opcodes ours uses)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    ins = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ins[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


@pytest.mark.parametrize("arch, nr, arg0, action", [
    (isolation.AUDIT_ARCH_X86_64, 39, 0, "allow"),                     # getpid
    (isolation.AUDIT_ARCH_X86_64, 308, 0, "eperm"),                    # setns
    (isolation.AUDIT_ARCH_X86_64, 165, 0, "eperm"),                    # mount
    (isolation.AUDIT_ARCH_X86_64, 430, 0, "eperm"),                    # fsopen
    (isolation.AUDIT_ARCH_X86_64, 56, 0x01200011, "allow"),            # clone as fork() calls it
    (isolation.AUDIT_ARCH_X86_64, 56, 0x10000000 | 17, "eperm"),       # clone(CLONE_NEWUSER)
    (isolation.AUDIT_ARCH_X86_64, 435, 0, "enosys"),                   # clone3: glibc falls back to clone
    (isolation.AUDIT_ARCH_X86_64, 0x40000000 | 308, 0, "eperm"),       # x32 ABI
    (isolation.AUDIT_ARCH_AARCH64, 268, 0, "eperm"),                   # setns
    (isolation.AUDIT_ARCH_AARCH64, 172, 0, "allow"),                   # getpid
    (isolation.AUDIT_ARCH_AARCH64, 220, 0x20000000, "eperm"),          # clone(CLONE_NEWPID)
    (0x40000003, 20, 0, "kill"),                                       # i386 compat calls: unknown arch
])
def test_the_seccomp_program(arch, nr, arg0, action):
    expected = {"allow": isolation.RET_ALLOW, "eperm": isolation.RET_ERRNO | errno.EPERM,
                "enosys": isolation.RET_ERRNO | errno.ENOSYS, "kill": isolation.RET_KILL}[action]
    assert run_seccomp(isolation.seccomp_program(), arch, nr, arg0) == expected


def test_what_a_worker_sees(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    pkg = tmp_path / "src" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise SystemExit('imported!')")   # located, never imported
    (tmp_path / "src" / "single.py").write_text("")
    assert isolation.locate_module("mypkg.sub", [str(tmp_path), str(tmp_path / "src")]) == str(pkg)
    assert isolation.module_binds("single", [str(tmp_path / "src")]) == ((str(tmp_path / "src" / "single.py"),),
                                                                         [str(tmp_path / "src")])
    assert isolation.module_binds("json", [str(tmp_path), *sys.path])[0] == ()   # the standard library: visible
    assert isolation.file_binds(str(tmp_path / "src" / "r.py")) == (str(tmp_path / "src"),)
    assert isolation.file_binds(str(tmp_path / "r.py")) == (str(tmp_path / "r.py"),)   # its folder holds TUNELOOP_HOME
    assert isolation.file_binds(os.path.expanduser("~/r.py")) == (os.path.realpath(os.path.expanduser("~/r.py")),)
    assert isolation.file_binds(str(tmp_path / "home" / "r.py")) == (str(tmp_path / "home" / "r.py"),)
    assert isolation.file_binds("/etc/r.py") == ("/etc/r.py",) and isolation.module_binds("etc", ["/"]) == ((), [])
    spec = isolation.layout(str(tmp_path / "box"), (str(tmp_path / "src"),))
    seen = [dst for _, dst in spec["ro"]]
    assert str(tmp_path / "src") in seen and isolation.PACKAGE_ROOT in seen and "/etc/passwd" in seen
    assert not any(p in seen for p in ("/", "/etc", "/root", os.path.expanduser("~"), str(tmp_path)))


def test_a_symlinked_reward_file_runs_from_its_real_folder(box, code, tmp_path):
    (tmp_path / "link.py").symlink_to(code)
    target = {"kind": "file", "path": str(tmp_path / "link.py"), "function": "good"}
    [s] = box.call(target, [Sample("1", P, "4", {"answer": "4"})])
    assert s.value == 1.0, s


def test_samples_run_concurrently_across_workers(box, code):
    box.warm({"kind": "file", "path": str(code), "function": "slow"})
    t = time.monotonic()
    assert [s.value for s in run(box, code, "slow", completions=["a", "b", "c", "d"])] == [1.0] * 4
    assert time.monotonic() - t < 1.5  # 4 x 0.4 s on 2 workers


def test_code_tests_runs_model_code_apart():
    ok = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "def add(a, b):\n    return a - b"
    hang = "def add(a, b):\n    while True:\n        pass"
    kill = "import os\nos._exit(1)"
    tests = ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"]
    with RewardContext() as ctx:
        fn = ctx.resolve("builtin:code_tests?timeout=0.5")
        scores = fn.score([Sample(str(i), P, c, {"tests": tests}) for i, c in enumerate([ok, wrong, hang, kill])])
        assert [s.value for s in scores] == [1.0, pytest.approx(1 / 3), 0.0, 0.0]
        assert scores[0].metrics == {"tests_passed": 3.0, "tests_total": 3.0, "compiled": 1.0}
        script = "import math\nassert add(2, 2) == 4\nassert math.isclose(add(0.1, 0.2), 0.3)\n"
        [s] = fn.score([Sample("x", P, ok, {"test": script})])
        assert s.value == 1.0 and s.metrics["tests_total"] == 2
        [missing] = fn.score([Sample("x", P, ok, {})])
        assert missing.error.kind == "config" and "tests" in missing.error.message


@pytest.mark.parametrize("fn, kind", [("raises", "exception"), ("hangs", "timeout"), ("string", "type"),
                                      ("huge", "memory"), ("missing_function", "load")])
def test_verify_catches_each_broken_reward(code, fn, kind):
    rows = [{"prompt": P, "reward_model": f"{code.name}:{fn}", "answer": "4"}] * 3
    with RewardContext(base_dir=code.parent, timeout_s=1.0, memory_mb=1024) as ctx:
        [report] = verify_rows(ctx, rows, samples=2)
    assert not report.ok and report.failures[0].score.error.kind == kind
    assert report.results[0].label == "reference (answer)" and len(report.results) == 1  # stops at the first failure


def test_verify_passes_a_good_reward(code):
    rows = [{"prompt": P, "answer": "4"}, {"prompt": P, "answer": "5"}]
    with RewardContext(base_dir=code.parent) as ctx:
        [report] = verify_rows(ctx, rows, default_ref=f"{code}:good", completions=["4"])
    assert report.ok and [r.score.value for r in report.results] == [1.0, 0.0]


def test_module_references_resolve_from_the_base_folder(code):
    with RewardContext(base_dir=code.parent) as ctx:
        [s] = ctx.resolve("user_rewards:good").score([Sample("1", P, "4", {"answer": "4"})])
    assert s.value == 1.0 and os.getcwd() != str(code.parent)
