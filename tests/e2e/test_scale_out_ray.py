"""--backend ray on a real local Ray cluster (`ray start --head` on 127.0.0.1 with 2 CPUs, started
once for the module and stopped after it): a tiny SFT job on 2 Ray Train workers completes, its
events reach tuneloop's database through the driver, its adapter is registered; a second job is
cancelled while it trains and its workers stop; a third loses a Ray Train worker to kill -9 after a
checkpoint, and Ray Train's replacement workers resume it from that checkpoint to one completion."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, cli

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """(address, temp dir) of a local head for this module; its processes carry RAY_TMPDIR=temp."""
    if not RAY.is_file():
        pytest.fail("ray is not installed: make installs it from requirements.lock (tuneloop[ray])")
    temp = tmp_path_factory.mktemp("ray")
    port = 6390 + os.getpid() % 500
    env = {**os.environ, "RAY_TMPDIR": str(temp)}
    start = subprocess.run([str(RAY), "start", "--head", "--num-cpus", "2", "--port", str(port),
                            "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--temp-dir", str(temp),
                            "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield f"127.0.0.1:{port}", temp
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(ray_head):
    return ray_head[0]


def tune(project: str, steps: int, *extra: str) -> list[str]:
    return ["tune", "--technique", "sft", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--project", project,
            "--batch-size", "8", "--max-steps", str(steps), "--save-steps", "2", "--backend", "ray",
            "--num-processes", "2", *extra]


def test_a_job_on_ray_workers_completes_reports_and_registers(home, ray_cluster):
    r = cli(*tune("ray", 4), "--json", env={"TUNELOOP_RAY_ADDRESS": ray_cluster}, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["state"] == "completed", job
    log = cli("logs", job["id"], "--project", "ray").stdout
    assert f"connected to the Ray cluster at {ray_cluster}" in log and "2 Ray Train workers" in log, log
    assert log.count("training started on cpu") == 1 and "step 4/4: loss=" in log, log   # rank 0 only
    series = json.loads(cli("metrics", job["id"], "--project", "ray", "--json").stdout)["series"]["loss"]
    assert [p["step"] for p in series] == [1, 2, 3, 4]
    [pkg] = json.loads(cli("registry", "list", "--project", "ray", "--json").stdout)
    assert pkg["job_id"] == job["id"] and (Path(job["output_path"]) / "adapter_model.safetensors").is_file()


def test_without_an_address_the_ray_backend_is_refused_before_any_job(home):
    r = cli(*tune("noaddr", 4), env={"TUNELOOP_RAY_ADDRESS": ""})
    assert r.returncode == 1 and "TUNELOOP_RAY_ADDRESS" in r.stderr, r.stderr
    assert json.loads(cli("status", "--project", "noaddr", "--json").stdout) == []


def test_the_plan_is_laid_out_on_the_cluster_and_a_job_that_does_not_fit_is_refused(home, ray_cluster):
    env = {"TUNELOOP_RAY_ADDRESS": ray_cluster}
    r = cli(*tune("rayplan", 4), "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert (f"cluster: {ray_cluster}, 1 node with 2 CPUs and 0 GPUs in all; 2 Ray Train workers of 1 CPU each (2 on "
            "node ") in r.stdout and "with Ray's start-up" in r.stdout, r.stdout
    [est] = re.findall(r"^ +est\. time +(\d+) s$", r.stdout, re.M)     # the plan's row
    assert int(est) >= 11, r.stdout          # Ray's start-up is counted
    for extra in (("--dry-run",), ()):       # 4 workers of 1 CPU on 2 CPUs: refused, before any job exists
        big = cli(*tune("rayplan", 4)[:-2], "--num-processes", "4", *extra, env=env)
        assert big.returncode == 1, big.stdout + big.stderr
        assert "--num-processes 4 needs 4 Ray Train workers of 1 CPU each" in big.stderr and "room for 2" in big.stderr
        assert "Use --num-processes 2 or add nodes" in big.stderr, big.stderr
    assert json.loads(cli("status", "--project", "rayplan", "--json").stdout) == []


def test_an_unreachable_cluster_is_refused_at_once(home):
    started = time.monotonic()
    r = cli(*tune("rayaway", 4), "--dry-run", env={"TUNELOOP_RAY_ADDRESS": "127.0.0.1:9"})
    assert r.returncode == 1 and "Cannot reach the Ray cluster at 127.0.0.1:9" in r.stderr, r.stderr
    assert "ray start --head" in r.stderr and time.monotonic() - started < 60


def test_cancel_stops_the_ray_job(home, ray_cluster):
    r = cli(*tune("raycancel", 5000), "--no-wait", env={"TUNELOOP_RAY_ADDRESS": ray_cluster})
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "raycancel", "--json").stdout)
    deadline = time.monotonic() + 300
    while json.loads(cli("status", job["id"], "--project", "raycancel", "--json").stdout)["step"] < 2:
        assert time.monotonic() < deadline, cli("logs", job["id"], "--project", "raycancel").stdout
        time.sleep(0.5)
    assert cli("cancel", job["id"], "--project", "raycancel").returncode == 0
    deadline = time.monotonic() + 120
    while (state := json.loads(cli("status", job["id"], "--project", "raycancel", "--json").stdout))["state"] \
            == "running":
        assert time.monotonic() < deadline, "the Ray job did not stop"
        time.sleep(0.5)
    assert state["state"] == "cancelled" and state["step"] < 5000 and state["output_path"] is None, state
    deadline = time.monotonic() + 60   # the driver disconnects and exits; its controller and workers go with it
    while subprocess.run(["pgrep", "-f", f"tuneloop.service.runner {job['id']}"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the driver of a cancelled Ray job is still running"
        time.sleep(0.5)
    assert json.loads(cli("registry", "list", "--project", "raycancel", "--json").stdout) == []


def ray_train_workers(temp: Path) -> list[int]:
    """PIDs of this cluster's Ray Train worker processes (Ray titles them ray::RayTrainWorker...)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if title.startswith("ray::RayTrainWorker") and f"RAY_TMPDIR={temp}".encode() in environ:
            found.append(int(proc.name))
    return sorted(found)


def test_a_lost_ray_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(home, ray_head):
    address, temp = ray_head
    steps = 60
    r = cli(*tune("raylost", steps), "--no-wait", env={"TUNELOOP_RAY_ADDRESS": address})
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "raylost", "--json").stdout)
    job_id = job["id"]
    checkpoints = home / "projects" / "raylost" / "jobs" / job_id / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-4" / "trainer_state.json").is_file():
        assert time.monotonic() < deadline, cli("logs", job_id, "--project", "raylost").stdout
        time.sleep(0.05)
    workers = ray_train_workers(temp)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)        # either rank: Ray Train restarts the whole worker group
    deadline = time.monotonic() + 480
    while (state := json.loads(cli("status", job_id, "--project", "raylost", "--json").stdout))["state"] \
            in ("queued", "running"):
        assert time.monotonic() < deadline, cli("logs", job_id, "--project", "raylost").stdout
        time.sleep(1)
    log = cli("logs", job_id, "--project", "raylost").stdout
    assert state["state"] == "completed", (state, log)
    assert state["attempts"] == 1, state     # the same driver: Ray Train replaced the workers, no re-run of tune
    starts = [line for line in log.splitlines() if "training started on cpu" in line]
    assert len(starts) == 2, log             # the first workers, then their replacements (rank 0 reports)
    assert "resuming from" not in starts[0] and "resuming from checkpoint-" in starts[1], starts
    resumed_at = int(starts[1].rsplit("checkpoint-", 1)[1].split()[0].rstrip(";,"))
    assert resumed_at >= 4, starts[1]
    # not retrained from step 0: each step up to the checkpoint was logged once, the rest once each after it
    logged = [int(m) for m in re.findall(rf"step (\d+)/{steps}: loss=", log)]
    assert sorted(set(logged)) == list(range(1, steps + 1)), logged
    assert all(logged.count(s) == 1 for s in range(1, resumed_at + 1)), logged
    assert log.count("job completed") == 1, log
    [pkg] = json.loads(cli("registry", "list", "--project", "raylost", "--json").stdout)
    assert pkg["job_id"] == job_id and (Path(state["output_path"]) / "adapter_model.safetensors").is_file()
    print(f"worker {workers[-1]} killed after checkpoint-4; the replacements resumed from checkpoint-{resumed_at}")
