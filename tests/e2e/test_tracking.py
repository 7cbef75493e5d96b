"""Experiment tracking and live metrics: a real MLflow tracking server (`mlflow server`, SQLite
backend, a free local port, started here) receives a real tune job's params, step metrics and
artifacts, read back with the MLflow client; `tuneloop metrics` prints the curves and draws them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, cli, write_jsonl

ROWS = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()[:8]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow server did not start:\n" + (root / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_a_tune_job_logs_params_step_metrics_and_artifacts_to_mlflow(home, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--max-steps", "6", "--mlflow-uri", mlflow_server,
            "--mlflow-experiment", "colours", "--mlflow-run-name", "first-try")
    assert r.returncode == 0, r.stderr
    assert f"MLflow tracking: experiment colours at {mlflow_server}" in r.stderr
    assert f"MLflow run: {mlflow_server}/#/experiments/" in r.stdout
    job = json.loads(cli("status", "sft", "--json").stdout)

    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("colours").experiment_id])
    assert run.info.run_name == "first-try" and run.info.status == "FINISHED"
    assert run.data.tags["tuneloop.job"] == job["id"] and run.data.tags["tuneloop.technique"] == "sft"
    params = run.data.params
    assert params["spec.technique"] == "sft" and params["spec.model"] == "tuneloop/tiny-qwen3"
    assert params["plan.total_steps"] == "6" and params["plan.precision"] == "fp32"
    assert params["spec.dataset_sha256"] == job["dataset_sha256"]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    events = [e for e in json.loads(cli("metrics", job["id"], "--json").stdout)["series"]["loss"]]
    assert [round(m.value, 5) for m in history] == [round(e["value"], 5) for e in events]
    assert history[-1].value < history[0].value
    assert "train_runtime" in run.data.metrics
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "tuneloop_spec.json", "output"} <= top
    output = {a.path for a in client.list_artifacts(run.info.run_id, "output")}
    assert {"output/adapter_config.json", "output/adapter_model.safetensors"} <= output
    local = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path))
    assert json.loads(Path(local).read_text())["job"] == job["id"]


def test_tracking_off_says_so_once_and_how_to_turn_it_on(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("Experiment tracking is off") == 1 and "MLFLOW_TRACKING_URI" in r.stderr
    bad = cli("tune", "--technique", "sft", "--dataset", str(data), "--mlflow-experiment", "x")
    assert bad.returncode == 1 and "need an MLflow tracking server" in bad.stderr and "--mlflow-uri" in bad.stderr


@pytest.mark.slow   # trains a job in a runner process
def test_an_unreachable_tracking_server_does_not_fail_the_job(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--max-steps", "2",
            env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}"})
    assert r.returncode == 0, r.stderr
    log = cli("logs", "sft").stdout
    assert "is unavailable (the job runs untracked)" in log


@pytest.mark.slow   # trains a job in a runner process
def test_metrics_prints_the_curves_and_draws_a_png(home, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    assert cli("tune", "--technique", "sft", "--dataset", str(data), "--max-steps", "5").returncode == 0
    png = tmp_path / "curves.png"
    r = cli("metrics", "sft", "--plot", str(png), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["panels"][:2] == ["loss", "learning_rate"]
    assert [p["step"] for p in out["series"]["loss"]] == [1, 2, 3, 4, 5]
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    table = cli("metrics", "sft").stdout
    assert "loss" in table and "learning_rate" in table and "metrics per step" in table
