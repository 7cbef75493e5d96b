"""Resume equals uninterrupted (torchtune's standard): a job killed with kill -9 after a checkpoint
and resumed by re-running its command ends with the same loss curve and the same adapter weights as
an uninterrupted run of the same spec (same data order, RNG state and learning-rate schedule)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, cli

pytestmark = pytest.mark.slow

STEPS, SAVE = 60, 10
TECHNIQUES = {
    "sft": ["--dataset", str(DEMO_DATA / "sft.jsonl")],
    "dpo": ["--dataset", str(DEMO_DATA / "dpo.jsonl")],
    "rlvr": ["--dataset", str(DEMO_DATA / "rlvr.jsonl"), "--reward-function", "builtin:exact_match",
             "--num-generations", "4", "--max-response-length", "8"],
}


def command(technique: str, project: str, steps: int = STEPS) -> list[str]:
    return ["tune", "--technique", technique, *TECHNIQUES[technique], "--project", project,
            "--max-steps", str(steps), "--save-steps", str(SAVE), "--json"]


def finished(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["state"] == "completed", job
    return job


def curve(job_id: str, project: str) -> dict[int, float]:
    r = cli("metrics", job_id, "--project", project, "--json")
    assert r.returncode == 0, r.stderr
    series = json.loads(r.stdout)["series"]
    key = "loss" if "loss" in series else next(k for k in series if k.endswith("loss"))
    return {p["step"]: p["value"] for p in series[key]}


def weights(output: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(output) / "adapter_model.safetensors"))


@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_killed_and_resumed_job_equals_the_uninterrupted_one(home, technique):
    straight = finished(cli(*command(technique, "straight"), timeout=1200))

    r = cli(*command(technique, "killed")[:-1], "--no-wait")
    assert r.returncode == 0, r.stderr
    [job] = json.loads(cli("status", "--project", "killed", "--json").stdout)
    checkpoint = home / "projects" / "killed" / "jobs" / job["id"] / "checkpoints" / f"checkpoint-{SAVE}"
    deadline = time.monotonic() + 600
    while not (checkpoint / "trainer_state.json").is_file():
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    pid = int(subprocess.run(["pgrep", "-f", f"tuneloop.service.runner {job['id']}"], capture_output=True,
                             text=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    status = json.loads(cli("status", job["id"], "--project", "killed", "--json").stdout)
    assert status["state"] != "completed", "the job finished before it was killed: raise STEPS"

    resumed = finished(cli(*command(technique, "killed"), timeout=1200))
    log = cli("logs", job["id"], "--project", "killed").stdout
    assert "resuming from checkpoint-" in log and resumed["attempts"] == 2, log

    a, b = curve(straight["id"], "straight"), curve(job["id"], "killed")
    assert sorted(a) == sorted(b) and max(a) == STEPS
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), (step, a[step], b[step])
    wa, wb = weights(straight["output_path"]), weights(resumed["output_path"])
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] - wb[name]).abs().max().item() <= 1e-5, name
