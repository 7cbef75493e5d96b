"""tuneloop.tracking: params flattened from the spec and plan, metrics per step, and a resumed job
(the runner restarted after kill -9) continuing its MLflow run instead of starting another. Uses
MLflow's SQLite store directly (the e2e test covers a real `mlflow server`)."""

from __future__ import annotations

from types import SimpleNamespace

from tuneloop.tracking import NoTracker, flatten, open_tracker, run_url


def test_flatten_and_run_url():
    assert flatten("spec", {"a": {"b": 1, "c": None}, "d": "x", "e/f g": [1, 2]}, {}) == \
        {"spec.a.b": "1", "spec.d": "x", "spec.e/f g": "[1, 2]"}
    assert run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"


def test_tracking_off_without_a_uri(tmp_path):
    spec = SimpleNamespace(mlflow_uri=None, project="p")
    assert isinstance(open_tracker(spec, {"id": "j", "job_dir": str(tmp_path)}, lambda *a: None), NoTracker)


def test_a_resumed_job_continues_its_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = SimpleNamespace(mlflow_uri=uri, mlflow_experiment=None, mlflow_run_name=None, project="p")
    job = {"id": "p-tune-sft-1", "job_dir": str(tmp_path), "technique": "sft", "training_type": "lora",
           "project": "p", "spec": {"model": "tuneloop/tiny-qwen3", "hyperparameters": {"learning_rate": 0.002}},
           "plan": {"total_steps": 4}}
    events = []
    first = open_tracker(spec, job, lambda level, message, data: events.append((level, message)))
    first.log_metrics(1, {"loss": 2.0, "flag": True, "nan": float("nan")})
    # the runner dies here (no finish); the restarted runner opens the tracker again
    second = open_tracker(spec, job, lambda level, message, data: events.append((level, message)))
    assert second.run_id == first.run_id and "(resumed)" in events[-1][1]
    second.log_metrics(2, {"loss": 1.0})
    second.finish("FINISHED")
    client = MlflowClient(uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "p-tune-sft-1"
    assert run.data.params["spec.hyperparameters.learning_rate"] == "0.002" and run.data.params["plan.total_steps"] == "4"
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [(1, 2.0), (2, 1.0)]
    assert set(run.data.metrics) == {"loss"}  # booleans and NaN are not metrics
    assert len(client.search_runs([run.info.experiment_id])) == 1 and all(level == "info" for level, _ in events)
