"""python -m tuneloop.rewards.isolation SPEC_JSON -- COMMAND...   (the namespaces launcher; started by the sandbox)

How a sandbox worker is walled off from the trainer and the machine. `tuneloop.rewards.sandbox`
builds one `layout` (what the worker sees) and starts the worker through one of three launchers:

- "bwrap": bubblewrap, when installed and working;
- "namespaces": this module run as a script, the same thing done with the kernel's primitives
  (unshare, uid/gid maps, a fork to become PID 1, a read-only root on tmpfs, pivot_root, /proc,
  then every capability dropped before the worker is exec'd);
- "unsafe": neither works and the user opted out (`--unsafe-reward-sandbox`): the worker is a
  plain process with the old limits only.

Either isolated launcher gives the worker new user, mount, PID, network, IPC and UTS namespaces, a
read-only filesystem holding only the interpreter, its site-packages, /usr, the tuneloop package and
the reward's own folder, a private tmpfs /tmp (its HOME), its own /proc, no capabilities and
no_new_privs. The worker then installs `seccomp_program()` (`lock_down`) before it loads any user
code. A cgroup (v2, or v1 memory + pids) caps the memory and process count of each worker where the
cgroup tree is writable; `probe` tries a launcher once per process and says why it failed.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import logging
import os
import platform
import re
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError

log = logging.getLogger(__name__)
MODES = ("bwrap", "namespaces", "unsafe")
PIDS_MAX = int(os.environ.get("TUNELOOP_SANDBOX_MAX_PROCS") or 128)   # processes + threads per worker
TMP_MB = 256                                                          # the worker's private /tmp
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])               # the folder holding the tuneloop package
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/timezone")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
HINT = ("Install bubblewrap (`apt-get install bubblewrap`) or enable unprivileged user namespaces "
        "(`sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000`), or pass "
        "`--unsafe-reward-sandbox` (TUNELOOP_UNSAFE_REWARD_SANDBOX=1) to run rewards with only the old "
        "process limits.")


class SandboxUnavailable(ValidationError):
    """No isolated launcher works on this machine, and running user code without one was not allowed."""

    code = "sandbox_unavailable"


# ---- what a worker sees -------------------------------------------------------------------------------
def _forbidden(path: str) -> bool:
    """Folders never exposed whole: /, the home folder, /tmp (the worker's own), TUNELOOP_HOME or above it."""
    tuneloop_home = os.path.realpath(os.environ.get("TUNELOOP_HOME") or os.path.expanduser("~/.tuneloop"))
    return (path in ("/", "/tmp", os.path.realpath(os.path.expanduser("~")))
            or tuneloop_home == path or tuneloop_home.startswith(path.rstrip("/") + "/"))


def _minimal(paths: list[str]) -> list[str]:
    """Distinct real paths, without those inside another one, shortest first (the mount order)."""
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)}, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def system_paths() -> list[str]:
    """What Python needs: /usr, the loader's library folders, the interpreter's prefixes and
    site-packages (the venv), and the folder holding the tuneloop package. All read-only."""
    paths = ["/usr"] + [f"/{n}" for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
                        if os.path.isdir(f"/{n}") and not os.path.islink(f"/{n}")]
    paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages(),
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), PACKAGE_ROOT]
    kept = []
    for p in _minimal(paths):
        if _forbidden(p):
            log.warning("the reward sandbox does not expose %s (the interpreter may not start)", p)
        else:
            kept.append(p)
    return kept


def visible(path: str, extra: tuple[str, ...] = ()) -> bool:
    path = os.path.realpath(path)
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in [*system_paths(), *extra])


def _too_wide(path: str) -> bool:
    """A reward's folder never exposed whole: the _forbidden ones and any top-level folder (/etc, /srv, ...)."""
    return _forbidden(path) or os.path.dirname(path) == "/"


def file_binds(path: str) -> tuple[str, ...]:
    """A reward file's own folder (only the file when that folder is the home folder, /tmp, a top-level
    folder or holds TUNELOOP_HOME)."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    return (path,) if _too_wide(folder) else (folder,)


def locate_module(module: str, search: list[str]) -> str | None:
    """The top-level package folder or module file `import module` would find, without importing it."""
    top, namespace = module.split(".")[0], None
    for entry in search:
        base = os.path.join(os.path.abspath(entry or os.getcwd()), top)
        if os.path.isfile(os.path.join(base, "__init__.py")):
            return base
        for cand in [base + ".py", *sorted(glob.glob(glob.escape(base) + ".*so"))]:
            if os.path.isfile(cand):
                return cand
        if namespace is None and os.path.isdir(base):
            namespace = base                         # a namespace package, unless a later entry has more
    return namespace


def module_binds(module: str, search: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(what to expose, the folder to put on sys.path) for a `module:function` reward."""
    found = locate_module(module, search)
    if found is None or _too_wide(os.path.realpath(found)):
        return (), []
    parent = os.path.dirname(os.path.realpath(found))
    return (() if visible(found) else (os.path.realpath(found),)), [parent]


def layout(home: str, extra: tuple[str, ...] = (), cwd: str | None = None) -> dict[str, Any]:
    """The sandbox's filesystem (JSON, for either launcher). `home` is the sandbox's folder on the host."""
    etc = os.path.join(home, "etc")
    os.makedirs(etc, exist_ok=True)
    uid, gid = os.getuid(), os.getgid()
    generated = {"passwd": f"sandbox:x:{uid}:{gid}:sandbox:/tmp:/usr/sbin/nologin\n",
                 "group": f"sandbox:x:{gid}:\n", "hostname": "sandbox\n",
                 "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n"}
    for name, text in generated.items():
        Path(etc, name).write_text(text)
    cwd = os.path.realpath(cwd) if cwd and not _too_wide(os.path.realpath(cwd)) else None
    ro = [[p, p] for p in _minimal([*system_paths(), *extra, *([cwd] if cwd else [])])]
    ro += [[os.path.realpath(f), f] for f in ETC_FILES if os.path.isfile(f)]
    ro += [[os.path.join(etc, n), f"/etc/{n}"] for n in generated]
    links = [[os.readlink(f"/{n}"), f"/{n}"] for n in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
             if os.path.islink(f"/{n}")]
    links += [["/proc/self/fd", "/dev/fd"]] + [[f"/proc/self/fd/{i}", f"/dev/{n}"]
                                               for i, n in enumerate(("stdin", "stdout", "stderr"))]
    return {"ro": ro, "dev": [d for d in DEVICES if os.path.exists(d)], "links": links, "tmp_mb": TMP_MB,
            "cwd": cwd or "/tmp", "root": os.path.join(home, "root"), "parent": os.getpid()}


# ---- launch commands --------------------------------------------------------------------------------
def command(mode: str, spec: dict[str, Any], argv: list[str]) -> list[str]:
    """The command line that starts `argv` in the sandbox `spec` describes."""
    if mode == "unsafe":
        return argv
    if mode == "namespaces":
        return [sys.executable, "-s", "-m", "tuneloop.rewards.isolation", json.dumps(spec), "--", *argv]
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--cap-drop", "ALL",
           "--hostname", "sandbox", "--size", str(spec["tmp_mb"] * 2**20), "--tmpfs", "/tmp",
           "--proc", "/proc", "--remount-ro", "/proc", "--size", str(64 * 2**20), "--tmpfs", "/dev/shm"]
    for dev in spec["dev"]:
        cmd += ["--dev-bind", dev, dev]
    for src, dst in spec["ro"]:
        cmd += ["--ro-bind", src, dst]
    for target, link in spec["links"]:
        cmd += ["--symlink", target, link]
    return cmd + ["--remount-ro", "/", "--chdir", spec["cwd"], "--", *argv]


_probed: dict[str, str | None] = {}


def probe(mode: str, env: dict[str, str], home: str) -> str | None:
    """None when `mode` starts a sandboxed Python that can lock itself down; else what failed. Cached."""
    if mode not in _probed:
        if mode == "bwrap" and not shutil.which("bwrap"):
            _probed[mode] = "bubblewrap (bwrap) is not installed"
        else:
            check = [sys.executable, "-s", "-c", "from tuneloop.rewards import isolation; isolation.lock_down()"]
            try:
                res = subprocess.run(command(mode, layout(home), check), env=env, cwd=home, capture_output=True,
                                     text=True, timeout=60, start_new_session=True)
                err = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
                _probed[mode] = None if res.returncode == 0 else f"{mode}: {err}"
            except (OSError, subprocess.TimeoutExpired) as e:
                _probed[mode] = f"{mode}: {e}"
    return _probed[mode]


def choose(env: dict[str, str], home: str, allow_unsafe: bool) -> str:
    """The isolation to use: TUNELOOP_SANDBOX_ISOLATION if set, else bwrap, else namespaces; 'unsafe' only
    when allowed. Never falls back silently: without a working launcher this raises SandboxUnavailable."""
    forced = (os.environ.get("TUNELOOP_SANDBOX_ISOLATION") or "").strip().lower()
    allow_unsafe = allow_unsafe or os.environ.get("TUNELOOP_UNSAFE_REWARD_SANDBOX", "") not in ("", "0", "false")
    if forced and forced not in MODES:
        raise ValidationError(f"TUNELOOP_SANDBOX_ISOLATION={forced!r} is not one of {', '.join(MODES)}.",
                              hint="Unset it to pick the strongest isolation that works.")
    if forced == "unsafe":
        return "unsafe"
    failures = []
    for mode in [forced] if forced else ["bwrap", "namespaces"]:
        why = probe(mode, env, home)
        if why is None:
            return mode
        failures.append(why)
    if allow_unsafe:
        log.warning("reward sandbox: no isolation works (%s); running user code with the old process limits "
                    "only, as --unsafe-reward-sandbox asked", "; ".join(failures))
        return "unsafe"
    raise SandboxUnavailable("The reward sandbox cannot isolate user code on this machine: " + "; ".join(failures),
                             hint=HINT)


# ---- seccomp ---------------------------------------------------------------------------------------
AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64 = 0xC000003E, 0xC00000B7
SYSCALLS = {   # the syscall numbers denied, per architecture (asm/unistd_64.h, asm-generic/unistd.h)
    AUDIT_ARCH_X86_64: dict(
        clone=56, clone3=435, setns=308, unshare=272, ptrace=101, mount=165, umount2=166, pivot_root=155,
        chroot=161, open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433,
        mount_setattr=442, bpf=321, keyctl=250, add_key=248, request_key=249, process_vm_readv=310,
        process_vm_writev=311, perf_event_open=298, kexec_load=246, kexec_file_load=320, init_module=175,
        finit_module=313, delete_module=176, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, open_by_handle_at=304, name_to_handle_at=303, syslog=103, reboot=169,
        swapon=167, swapoff=168, acct=163, quotactl=179, iopl=172, ioperm=173),
    AUDIT_ARCH_AARCH64: dict(
        clone=220, clone3=435, setns=268, unshare=97, ptrace=117, mount=40, umount2=39, pivot_root=41,
        chroot=51, open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433,
        mount_setattr=442, bpf=280, keyctl=219, add_key=217, request_key=218, process_vm_readv=270,
        process_vm_writev=271, perf_event_open=241, kexec_load=104, kexec_file_load=294, init_module=105,
        finit_module=273, delete_module=106, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, open_by_handle_at=265, name_to_handle_at=264, syslog=116, reboot=142,
        swapon=224, swapoff=225, acct=89, quotactl=60),
}
NATIVE_ARCH = {"x86_64": AUDIT_ARCH_X86_64, "amd64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64,
               "arm64": AUDIT_ARCH_AARCH64}
CLONE_NEW_FLAGS = 0x7E020000   # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06   # BPF_LD|W|ABS, BPF_JMP|{JEQ,JGE,JSET}|K, BPF_RET|K
RET_KILL, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000


def seccomp_program() -> bytes:
    """Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}: on x86-64 and
    aarch64, the syscalls in SYSCALLS fail with EPERM, clone with a CLONE_NEW* flag too, clone3 with
    ENOSYS (glibc then falls back to clone, whose flags a filter can read); x32 calls fail; any other
    architecture (e.g. i386 compat calls) kills the process."""
    prog: list[list[Any]] = []
    labels: dict[str, int] = {}

    def op(code: int, k: int = 0, jt: Any = 0, jf: Any = 0) -> None:
        prog.append([code, jt, jf, k])

    for arch, nrs in SYSCALLS.items():
        op(_LD, 4)                                        # A = arch
        op(_JEQ, arch, 0, f"not-{arch}")
        op(_LD, 0)                                        # A = syscall number
        if arch == AUDIT_ARCH_X86_64:
            op(_JGE, 0x40000000, "deny")                  # the x32 ABI
        op(_JEQ, nrs["clone3"], "enosys")
        op(_JEQ, nrs["clone"], "clone")
        for name, nr in nrs.items():
            if name not in ("clone", "clone3"):
                op(_JEQ, nr, "deny")
        op(_RET, RET_ALLOW)
        labels[f"not-{arch}"] = len(prog)
    op(_RET, RET_KILL)
    labels["clone"] = len(prog)
    op(_LD, 16)                                           # A = low 32 bits of args[0], clone's flags
    op(_JSET, CLONE_NEW_FLAGS, "deny")
    op(_RET, RET_ALLOW)
    labels["deny"] = len(prog)
    op(_RET, RET_ERRNO | errno.EPERM)
    labels["enosys"] = len(prog)
    op(_RET, RET_ERRNO | errno.ENOSYS)
    out = b""
    for i, (code, jt, jf, k) in enumerate(prog):
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        assert 0 <= jt <= 255 and 0 <= jf <= 255, "a seccomp jump is out of range"
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 22, 38, 47


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(res: int, what: str) -> None:
    if res != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def lock_down() -> None:
    """no_new_privs, then the seccomp filter, for this process and everything it starts."""
    libc = _libc()
    if NATIVE_ARCH.get(platform.machine().lower()) is None:
        raise OSError(errno.ENOSYS, f"no seccomp table for {platform.machine()}")
    prog = ctypes.create_string_buffer(seccomp_program())
    fprog = _SockFprog(len(prog.raw) // 8, ctypes.cast(prog, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _check(libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")


# ---- cgroups ---------------------------------------------------------------------------------------
class Cgroup:
    """One worker's memory and process caps: a cgroup at <this process's cgroup>/tuneloop/<sandbox>/<worker>
    in cgroup v2, or in the v1 memory and pids hierarchies. `create` answers None where not writable."""

    def __init__(self, kind: str, dirs: list[str]):
        self.kind, self.dirs = kind, dirs

    @classmethod
    def create(cls, sandbox: str, worker: str, memory_mb: int, pids: int) -> "Cgroup | None":
        found = _cgroup_bases()
        if found is None:
            return None
        kind, bases = found
        limits = {"v2": {"memory.max": memory_mb * 2**20, "memory.swap.max": 0, "pids.max": pids},
                  "memory": {"memory.limit_in_bytes": memory_mb * 2**20,
                             "memory.memsw.limit_in_bytes": memory_mb * 2**20},
                  "pids": {"pids.max": pids}}
        dirs = []
        try:
            for controller, base in bases.items():
                path = os.path.join(base, sandbox, worker)
                os.makedirs(path, exist_ok=True)
                if kind == "v2":
                    _write(os.path.join(base, sandbox, "cgroup.subtree_control"), "+memory +pids")
                dirs.append(path)
                for name, value in limits[controller].items():
                    if os.path.exists(os.path.join(path, name)):
                        _write(os.path.join(path, name), str(value))
        except OSError as e:
            log.warning("reward sandbox: cannot set up cgroup %s (%s); rlimits only", dirs, e)
            cls(kind, dirs).remove()
            return None
        return cls(kind, dirs)

    def wrap(self, argv: list[str]) -> list[str]:
        """argv, started inside this cgroup (a shell joins it, then execs argv)."""
        join = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
        procs = [os.path.join(d, "cgroup.procs") for d in self.dirs]
        return ["/bin/sh", "-c", join, "sh", str(len(procs)), *procs, *argv]

    def oom_kills(self) -> int:
        for d in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    for line in Path(d, name).read_text().splitlines():
                        if line.startswith("oom_kill "):
                            return int(line.split()[1])
                except (OSError, ValueError):
                    pass
        return 0

    def remove(self) -> None:
        """Kill everything still in the cgroup, then remove it."""
        for d in self.dirs:
            _kill_cgroup(d)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _kill_cgroup(path: str) -> None:
    for _ in range(100):
        try:
            pids = [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    try:
        os.rmdir(path)
    except OSError:
        pass


def remove_sandbox_cgroups(sandbox: str) -> None:
    found = _cgroup_bases()
    for base in (found[1].values() if found else ()):
        folder = os.path.join(base, sandbox)
        for leaf in (os.listdir(folder) if os.path.isdir(folder) else ()):
            if os.path.isdir(os.path.join(folder, leaf)):
                _kill_cgroup(os.path.join(folder, leaf))
        try:
            os.rmdir(folder)
        except OSError:
            pass


_bases: list[Any] = []


def _cgroup_bases() -> tuple[str, dict[str, str]] | None:
    """('v2', {'v2': dir}) or ('v1', {'memory': dir, 'pids': dir}): the writable tuneloop folders, or None."""
    if not _bases:
        _bases.append(_find_cgroup_bases())
    return _bases[0]


def _find_cgroup_bases() -> tuple[str, dict[str, str]] | None:
    try:
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else ["v2"]:
                own[c] = path
        mounts = {}
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            for c in (["v2"] if fstype == "cgroup2" else [c for c in options if c in ("memory", "pids")]
                      if fstype == "cgroup" else []):
                mounts.setdefault(c, (fields[3], fields[4]))
    except (OSError, ValueError):
        return None

    def folder(c: str) -> str:
        root, mountpoint = mounts[c]
        path = own.get(c, "/")
        if root != "/" and path.startswith(root):
            path = path[len(root):]
        return os.path.join(mountpoint, path.lstrip("/"), "tuneloop")

    candidates = []
    if "v2" in mounts and "v2" in own:
        try:
            if {"memory", "pids"} <= set(Path(os.path.dirname(folder("v2")), "cgroup.controllers").read_text().split()):
                candidates.append(("v2", {"v2": folder("v2")}))
        except OSError:
            pass
    if "memory" in mounts and "pids" in mounts:
        candidates.append(("v1", {"memory": folder("memory"), "pids": folder("pids")}))
    for kind, bases in candidates:
        try:
            for base in bases.values():
                os.makedirs(base, exist_ok=True)
                if kind == "v2":
                    _write(os.path.join(os.path.dirname(base), "cgroup.subtree_control"), "+memory +pids")
                    _write(os.path.join(base, "cgroup.subtree_control"), "+memory +pids")
                _sweep_stale(base)
            return kind, bases
        except OSError as e:
            log.debug("cgroup %s not usable: %s", kind, e)
    return None


def sweep_stale_cgroups() -> None:
    """Remove the cgroups of sandboxes whose process is gone (killed before it could close them)."""
    found = _cgroup_bases()
    for base in (found[1].values() if found else ()):
        _sweep_stale(base)


def _sweep_stale(base: str) -> None:
    for name in os.listdir(base):
        parts = name.split("-")
        if len(parts) >= 2 and parts[0] == "sbx" and parts[1].isdigit() and not Path(f"/proc/{parts[1]}").exists():
            folder = os.path.join(base, name)
            for leaf in os.listdir(folder):
                if os.path.isdir(os.path.join(folder, leaf)):
                    _kill_cgroup(os.path.join(folder, leaf))
            try:
                os.rmdir(folder)
            except OSError:
                pass


# ---- the namespaces launcher ---------------------------------------------------------------------
CLONE_NS = 0x10000000 | 0x00020000 | 0x20000000 | 0x40000000 | 0x08000000 | 0x04000000  # USER NS PID NET IPC UTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 18, 1 << 21, 1 << 24
SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41}


def _mount(libc: ctypes.CDLL, src: str | None, dst: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {src} on {dst}")


def _locked_flags(path: str) -> int:
    """The flags a bind mount inside a user namespace must keep (the kernel locks them)."""
    f = os.statvfs(path).f_flag
    flags = MS_NOSUID * bool(f & os.ST_NOSUID) | MS_NODEV * bool(f & os.ST_NODEV) | MS_NOEXEC * bool(f & os.ST_NOEXEC)
    if f & os.ST_NOATIME:
        return flags | MS_NOATIME
    flags |= MS_NODIRATIME * bool(f & os.ST_NODIRATIME)
    return flags | (MS_RELATIME if f & os.ST_RELATIME else MS_STRICTATIME)


def _bind_ro(libc: ctypes.CDLL, src: str, dst: str) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    _mount(libc, src, dst, None, MS_BIND | MS_REC)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():   # the bind and its submounts
        point = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), os.fsencode(line.split()[4])))
        if point == dst or point.startswith(dst.rstrip("/") + "/"):
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags(point)
            _mount(libc, None, point, None, flags)


def _build_root(libc: ctypes.CDLL, spec: dict[str, Any]) -> None:
    """A new root on tmpfs with the spec's read-only binds, /dev nodes, /proc and a private /tmp; pivot into it."""
    root = spec["root"]
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    os.makedirs(root, exist_ok=True)
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    for sub in ("tmp", "proc", "dev/shm", ".oldroot"):
        os.makedirs(root + "/" + sub, exist_ok=True)
    _mount(libc, "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={spec['tmp_mb']}m")
    _mount(libc, "tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    _mount(libc, "proc", root + "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for dev in spec["dev"]:
        open(root + dev, "a").close()
        _mount(libc, dev, root + dev, None, MS_BIND)
    for src, dst in spec["ro"]:
        _bind_ro(libc, src, root + dst)
    for target, link in spec["links"]:
        os.symlink(target, root + link)
    _check(libc.syscall(SYS_PIVOT_ROOT[platform.machine().lower()], root.encode(), (root + "/.oldroot").encode()),
           "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.oldroot", 2), "umount2(/.oldroot)")   # MNT_DETACH
    os.rmdir("/.oldroot")
    _mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _drop_capabilities(libc: ctypes.CDLL, last_cap: int) -> None:
    for cap in range(last_cap + 1):
        _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"prctl(PR_CAPBSET_DROP, {cap})")
    _check(libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header = struct.pack("=Ii", 0x20080522, 0)                       # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.capset(ctypes.create_string_buffer(header), ctypes.create_string_buffer(24)), "capset")


def _exit_status(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def launch(spec: dict[str, Any], argv: list[str]) -> None:
    """Start argv in new namespaces (see the module docstring); exits with its status (128 + signal if killed)."""
    libc = _libc()
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != spec["parent"]:
        os._exit(1)                                                  # the sandbox is already gone
    uid, gid = os.getuid(), os.getgid()
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    _check(libc.unshare(CLONE_NS), "unshare(CLONE_NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    init = os.fork()
    if init:                                                         # outside: wait for the namespace's init
        os._exit(_exit_status(os.waitpid(init, 0)[1]))
    signal.signal(signal.SIGINT, signal.SIG_DFL)                     # PID 1: no handler, so no signal from inside
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    _build_root(libc, spec)
    _check(libc.sethostname(b"sandbox", 7), "sethostname")
    with socket.socket() as s:                                       # loopback up, as bwrap does
        import fcntl

        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS: UP|LOOPBACK|RUNNING
    _drop_capabilities(libc, last_cap)
    worker = os.fork()
    if worker == 0:
        os.chdir(spec["cwd"])
        os.execv(argv[0], argv)
    while True:                                                      # reap orphans until the worker exits
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == worker:
            os._exit(_exit_status(status))                           # the kernel then kills the rest


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m tuneloop.rewards.isolation SPEC_JSON -- COMMAND...")
    try:
        launch(json.loads(args[0]), args[2:])
    except OSError as e:
        print(f"tuneloop sandbox launcher: {e}", file=sys.stderr, flush=True)
        os._exit(126)


if __name__ == "__main__":
    main()
