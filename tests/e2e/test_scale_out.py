"""Scale-out on one machine (`tuneloop tune --num-processes 2`): two DDP ranks over gloo on the
built-in tiny model train the same job as one process with the same global batch (same loss curve,
same adapter, within float reassociation), and a rank killed with kill -9 stops the whole job (the
other rank and the runner exit, nothing hangs) which the same command then resumes to completion."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, REPO, cli

pytestmark = pytest.mark.slow

SFT = str(DEMO_DATA / "sft.jsonl")      # 16 short rows of one shape: no length grouping on either side
# The two layouts see the same 8 rows per optimizer step (one process: 8 per device; two: 4 each,
# accelerate hands rank r its share of the same shuffled batch) and DDP averages the two halves'
# gradients, weighted by their tokens as one process does. What differs is the order of float
# additions (two partial sums and an all-reduce against one sum) and each micro-batch's padding.
# The losses: measured 9.8e-8 relative at most (2026-12-03); bound 1e-5. The adapters: AdamW divides
# each coordinate by sqrt(v) + eps (eps 1e-8), so a coordinate whose gradient is near 1e-8 turns
# float noise of ~1e-10 in it into lr x 1e-10 / 1e-8 = 2e-5 per step at lr 2e-3: measured 3.0e-5 at
# most over 6 steps, while the largest trained lora_B weight is 7e-3; bound 1e-4. Rows assigned to
# the wrong rank or an unaveraged gradient would move weights by up to a whole step (~lr, 2e-3).
LOSS_REL = 1e-5
WEIGHT_ABS = 1e-4


def tune(project: str, *extra: str, steps: int = 6, save: int = 3) -> list[str]:
    return ["tune", "--technique", "sft", "--dataset", SFT, "--project", project, "--batch-size", "8",
            "--max-steps", str(steps), "--save-steps", str(save), *extra, "--json"]


def finished(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["state"] == "completed", job
    return job


def plan_of(job: dict, project: str) -> dict:
    return json.loads((Path(os.environ["TUNELOOP_HOME"]) / "projects" / project / "jobs" / job["id"] / "plan.json")
                      .read_text())


def curve(job_id: str, project: str) -> dict[int, float]:
    r = cli("metrics", job_id, "--project", project, "--json")
    assert r.returncode == 0, r.stderr
    return {p["step"]: p["value"] for p in json.loads(r.stdout)["series"]["loss"]}


def events(job_id: str, project: str) -> str:
    return cli("logs", job_id, "--project", project).stdout


def weights(output: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(output) / "adapter_model.safetensors"))


def job_processes(job_id: str) -> dict[int, int | None]:
    """pid -> RANK of every process of the job (its runner: None)."""
    out: dict[int, int | None] = {}
    for pid in map(int, subprocess.run(["pgrep", "-f", job_id], capture_output=True, text=True).stdout.split()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                       .split("\0") if "=" in e)
        except OSError:
            continue
        if "tuneloop.service.launch" in cmd:
            out[pid] = int(env.get("RANK", "-1"))
        elif "tuneloop.service.runner" in cmd:
            out[pid] = None
    return out


def test_dry_run_shows_the_two_process_layout(home):
    r = cli(*tune("plan", "--num-processes", "2", "--dry-run")[:-1])
    assert r.returncode == 0, r.stderr
    assert re.search(r"cpu x2 \(\d+ threads\)", r.stdout) and "4 per device x 1 accumulation x 2 = 8" in r.stdout, \
        r.stdout
    assert "layout: 2 processes on this machine, DDP over gloo" in r.stdout
    bad = cli(*tune("plan", "--num-processes", "0", "--dry-run")[:-1])
    assert bad.returncode == 1 and "num_processes=0 is out of range" in bad.stderr


def test_two_ddp_processes_train_what_one_process_trains(home):
    one = finished(cli(*tune("one"), timeout=600))
    two = finished(cli(*tune("two", "--num-processes", "2"), timeout=600))
    log = events(two["id"], "two")
    assert "launching 2 processes on this machine (DDP over gloo" in log, log
    p1, p2 = plan_of(one, "one"), plan_of(two, "two")
    assert (p2["per_device_batch"], p2["world_size"], p2["num_processes"]) == (4, 2, 2)
    assert p1["per_device_batch"] == 8 and p1["global_batch"] == p2["global_batch"] == 8
    # only rank 0 reports: one metrics event per logged step, one "training started", one checkpoint event each
    assert log.count("training started on cpu") == 1 and log.count("checkpoint saved at step 3") == 1, log
    a, b = curve(one["id"], "one"), curve(two["id"], "two")
    assert sorted(a) == sorted(b) == list(range(1, 7)), (a, b)
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    assert worst <= LOSS_REL, f"loss curves differ by {worst:.2e} relative: {a} vs {b}"
    wa, wb = weights(one["output_path"]), weights(two["output_path"])
    assert wa.keys() == wb.keys() and wa
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    moved = max(wa[k].abs().max().item() for k in wa if "lora_B" in k)
    print(f"loss curves: worst relative difference {worst:.2e}; adapters: largest difference {diff:.2e} "
          f"(largest trained lora_B weight {moved:.2e}, learning rate {p1['learning_rate']:g})")
    assert diff <= WEIGHT_ABS, f"adapters differ by {diff:.2e}"
    assert moved > 20 * WEIGHT_ABS      # the adapters trained: the bound above is not trivially met
    pkg = json.loads(cli("registry", "list", "--project", "two", "--json").stdout)
    assert [p["job_id"] for p in pkg] == [two["id"]]


def test_a_killed_rank_stops_the_job_and_the_same_command_resumes_it(home):
    args = tune("kill", "--num-processes", "2", steps=40, save=5)
    r = cli(*args[:-1], "--no-wait")
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "kill", "--json").stdout)
    job_id = job["id"]
    checkpoint = home / "projects" / "kill" / "jobs" / job_id / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert time.monotonic() < deadline, events(job_id, "kill")
        time.sleep(0.05)
    ranks = job_processes(job_id)
    [victim] = [pid for pid, rank in ranks.items() if rank == 1]
    assert sorted(r for r in ranks.values() if r is not None) == [0, 1]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60       # rank 0 is blocked in an all-reduce: the agent must end it
    while job_processes(job_id):
        assert time.monotonic() < deadline, f"still running after a rank was killed: {job_processes(job_id)}"
        time.sleep(0.2)
    status = json.loads(cli("status", job_id, "--project", "kill", "--json").stdout)
    assert status["stale"] and status["step"] < 40, status
    log = events(job_id, "kill")
    assert "job stopped: rank 1" in log and "SIGKILL" in log and "Re-run the same `tuneloop tune`" in log, log

    resumed = finished(cli(*args, timeout=600))
    log = events(job_id, "kill")
    assert resumed["id"] == job_id and resumed["attempts"] == 2, resumed
    starts = [line for line in log.splitlines() if "resuming from checkpoint-" in line]
    assert starts and int(starts[0].rsplit("checkpoint-", 1)[1]) >= 5, log
    assert sorted(curve(job_id, "kill"))[-1] == 40


def wait_for_checkpoint(home: Path, project: str, job_id: str, step: int) -> None:
    path = home / "projects" / project / "jobs" / job_id / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not path.is_file():
        assert time.monotonic() < deadline, events(job_id, project)
        time.sleep(0.05)


def wait_gone(job_id: str) -> None:
    deadline = time.monotonic() + 60
    while job_processes(job_id):
        assert time.monotonic() < deadline, f"still running: {job_processes(job_id)}"
        time.sleep(0.2)


def assert_resumed_on(job: dict, project: str, was: str, now: str, per_device: int, steps: int) -> None:
    """The job resumed from its checkpoint on the new layout at the same global batch, said so, and
    did not train the steps up to that checkpoint again."""
    log = events(job["id"], project)
    assert f"layout changed on resume: {was} -> {now}, the same global batch 8" in log, log
    starts = [line for line in log.splitlines() if "training started on cpu" in line]
    assert len(starts) == 2 and "resuming from checkpoint-" in starts[1], log
    resumed_at = int(starts[1].rsplit("checkpoint-", 1)[1].split()[0])
    assert resumed_at >= 5, starts
    logged = [int(m) for m in re.findall(rf"step (\d+)/{steps}: loss=", log)]
    assert sorted(set(logged)) == list(range(1, steps + 1)) and all(logged.count(s) == 1 for s in range(1, resumed_at + 1))
    p = plan_of(job, project)
    assert (p["num_processes"], p["per_device_batch"], p["global_batch"], p["total_steps"]) == \
        (int(now[0]), per_device, 8, steps), p
    [pkg] = json.loads(cli("registry", "list", "--project", project, "--json").stdout)
    assert pkg["job_id"] == job["id"]


def test_a_job_killed_on_two_processes_resumes_on_one_at_the_same_global_batch(home):
    r = cli(*tune("shrink", "--num-processes", "2", steps=40, save=5)[:-1], "--no-wait")
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "shrink", "--json").stdout)
    wait_for_checkpoint(home, "shrink", job["id"], 5)
    [victim] = [pid for pid, rank in job_processes(job["id"]).items() if rank == 1]
    os.kill(victim, signal.SIGKILL)
    wait_gone(job["id"])
    again = cli(*tune("shrink", "--num-processes", "1", steps=40, save=5), timeout=600)
    assert "layout changed on resume: 2 processes on this machine -> 1 process" in again.stderr, again.stderr
    resumed = finished(again)
    assert resumed["id"] == job["id"] and resumed["attempts"] == 2, resumed
    assert_resumed_on(resumed, "shrink", "2 processes on this machine", "1 process", 8, 40)


def test_a_job_killed_on_one_process_resumes_on_two_and_a_batch_that_does_not_split_is_refused(home):
    r = cli(*tune("grow", steps=40, save=5)[:-1], "--no-wait")
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "grow", "--json").stdout)
    wait_for_checkpoint(home, "grow", job["id"], 5)
    [runner] = list(job_processes(job["id"]))      # one process: the runner trains
    os.kill(runner, signal.SIGKILL)
    wait_gone(job["id"])
    bad = cli(*tune("grow", "--num-processes", "3", steps=40, save=5)[:-1])
    assert bad.returncode == 1 and "global batch of 8" in bad.stderr and "--num-processes 1 / 2 / 4 / 8" in bad.stderr, \
        bad.stderr
    assert not job_processes(job["id"])           # refused: nothing was restarted
    resumed = finished(cli(*tune("grow", "--num-processes", "2", steps=40, save=5), timeout=600))
    assert resumed["id"] == job["id"] and resumed["attempts"] == 2, resumed
    assert_resumed_on(resumed, "grow", "1 process", "2 processes on this machine", 4, 40)


def test_two_machines_with_the_same_command_form_one_job(home, tmp_path):
    """--nodes 2 on 127.0.0.1: node 0 (TUNELOOP_NODE_RANK=0) owns the job; node 1, with a home of its
    own, only contributes its rank; together they train what one process trains."""
    from tuneloop.service.launch import free_port

    master = {"TUNELOOP_MASTER_ADDR": f"127.0.0.1:{free_port()}"}
    args = tune("nodes", "--nodes", "2", steps=6, save=3)
    node0 = subprocess.Popen([sys.executable, "-m", "tuneloop", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **master, "TUNELOOP_NODE_RANK": "0"}, cwd=REPO)
    node1 = cli(*args[:-1], env={**master, "TUNELOOP_NODE_RANK": "1", "TUNELOOP_HOME": str(tmp_path / "node1")},
                timeout=600)
    out, err = node0.communicate(timeout=600)
    assert node1.returncode == 0, node1.stdout + node1.stderr
    assert "Node 1 of 2 (rendezvous at 127.0.0.1:" in node1.stderr and "node 0 owns the job" in node1.stderr
    two = finished(subprocess.CompletedProcess(args, node0.returncode, out, err))
    log = events(two["id"], "nodes")
    assert "launching 1 process on node 0 of 2 (rendezvous at 127.0.0.1:" in log and log.count("training started on cpu") == 1, log
    p = plan_of(two, "nodes")
    assert (p["nodes"], p["num_processes"], p["world_size"], p["per_device_batch"], p["global_batch"]) == (2, 1, 2, 4, 8)
    assert json.loads(cli("status", "--project", "nodes", "--json",
                          env={"TUNELOOP_HOME": str(tmp_path / "node1")}).stdout) == []   # no job on node 1
    one = finished(cli(*tune("onenode"), timeout=600))
    a, b = curve(one["id"], "onenode"), curve(two["id"], "nodes")
    assert sorted(a) == sorted(b) == list(range(1, 7)), (a, b)
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    assert worst <= LOSS_REL, f"loss curves differ by {worst:.2e} relative: {a} vs {b}"
    [pkg] = json.loads(cli("registry", "list", "--project", "nodes", "--json").stdout)
    assert pkg["job_id"] == two["id"]
