"""`tuneloop eval` from the command line, as a tracked job: submitted, followed, listed by
`status`, its phases in `logs`, its report in the job folder; `--no-wait` and `cancel`; bad input
exits 1 and creates no job."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import DEMO_DATA, cli, write_jsonl

pytestmark = pytest.mark.slow
SFT = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]


def statuses() -> list[dict]:
    return json.loads(cli("status", "--json").stdout)


def test_eval_runs_as_a_tracked_job(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", SFT)
    assert cli("tune", "--technique", "sft", "--dataset", str(data), "--max-steps", "20").returncode == 0
    r = cli("eval", "--model", "sft", "--dataset", str(data), "--compare-base", "--samples", "6", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["technique"] == "sft" and result["rows"] == 6 and result["model"]["loss"] < result["base"]["loss"]
    [job] = [j for j in statuses() if j["technique"] == "eval"]
    assert job["id"] == result["job"] and job["state"] == "completed" and job["output_type"] == "evaluation"
    assert job["output_path"].startswith(str(home)) and job["metrics"]["base/loss"] == result["base"]["loss"]
    log = cli("logs", job["id"]).stdout
    assert "evaluation started" in log and "model loaded" in log and "evaluation completed: loss=" in log

    bad = cli("eval", "--model", "no-such-model", "--dataset", str(data))
    assert bad.returncode == 1 and "is not a folder, a job" in bad.stderr
    bad = cli("eval", "--model", "sft", "--dataset", str(tmp_path / "missing.jsonl"))
    assert bad.returncode == 1 and "missing.jsonl" in bad.stderr
    assert len([j for j in statuses() if j["technique"] == "eval"]) == 1  # neither created a job


def test_no_wait_and_cancel(home, tmp_path):
    rows = [{"prompt": f"Say something about the number {i}.", "completion": "ok"} for i in range(64)]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    r = cli("eval", "--model", "tuneloop/tiny-qwen3", "--dataset", str(data), "--max-new-tokens", "64", "--no-wait",
            "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["state"] in ("queued", "running")
    assert cli("cancel", job["id"]).returncode == 0
    deadline = time.monotonic() + 120
    while (state := json.loads(cli("status", job["id"], "--json").stdout)["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert state == "cancelled"
