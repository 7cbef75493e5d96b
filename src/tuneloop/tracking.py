"""Experiment tracking: a job's spec and plan as params, its metrics per step, and its manifest and
output as artifacts, in MLflow.

Tracking is on when the job's spec names a tracking URI: `--mlflow-uri`, the SDK's `mlflow_uri`, or
`MLFLOW_TRACKING_URI` at submission (kept in the spec, so a resumed job logs to the same place).
The runner logs through `MlflowClient` (no global mlflow state); a resumed job (kill -9, re-run)
continues its MLflow run, whose id is kept in the job folder. A tracking server that fails never
fails the job: the first error of each kind becomes a warning event and training goes on.

    tracker = open_tracker(spec, job, on_event)   # NoTracker when tracking is off
    tracker.log_metrics(step, {"loss": 0.5})
    tracker.finish("FINISHED", output_dir)
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)
OFF_MESSAGE = ("ℹ️  Experiment tracking is off. To log params, step metrics and the output to MLflow, set "
               "MLFLOW_TRACKING_URI (or pass --mlflow-uri URI).")
PARAM_MAX = 6000        # MLflow's limit on a param value
_KEY_OK = re.compile(r"[^\w\-. /:]")


def tracking_uri(spec_uri: str | None, environ: dict[str, str]) -> str | None:
    return spec_uri or environ.get("MLFLOW_TRACKING_URI") or None


def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """{"plan.per_device_batch": "2", "spec.hyperparameters.learning_rate": "0.002", ...}"""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None:
        text = value if isinstance(value, str) else json.dumps(value)
        out[_KEY_OK.sub("_", prefix)] = text[:PARAM_MAX]
    return out


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{uri} (experiment {experiment_id}, run {run_id})"


class NoTracker:
    enabled = False
    url: str | None = None

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def finish(self, status: str, output_dir: Path | None = None) -> None:
        pass


class MlflowTracker(NoTracker):
    enabled = True

    def __init__(self, uri: str, experiment: str, run_name: str, job: dict[str, Any], on_event: Callable):
        from mlflow.tracking import MlflowClient

        self.uri, self.on_event, self._warned = uri, on_event, set()
        self.client = MlflowClient(tracking_uri=uri)
        state_file = Path(job["job_dir"]) / "mlflow_run.json"
        if state_file.is_file():  # a resumed job continues its run
            saved = json.loads(state_file.read_text())
            self.experiment_id, self.run_id = saved["experiment_id"], saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            resumed = True
        else:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            tags = {"tuneloop.job": job["id"], "tuneloop.technique": job["technique"],
                    "tuneloop.training_type": job["training_type"], "tuneloop.project": job["project"],
                    "tuneloop.base_model": job["spec"].get("model") or ""}
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            self._log_params(job)
            state_file.write_text(json.dumps({"experiment_id": self.experiment_id, "run_id": self.run_id}))
            resumed = False
        self.url = run_url(uri, self.experiment_id, self.run_id)
        on_event("info", f"MLflow run{' (resumed)' if resumed else ''}: {self.url}",
                 {"mlflow_run_id": self.run_id, "mlflow_experiment_id": self.experiment_id, "mlflow_url": self.url})

    def _log_params(self, job: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = flatten("spec", job["spec"], {})
        flatten("plan", job["plan"], params)
        items = [Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):   # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def _warn(self, what: str, e: Exception) -> None:
        if what not in self._warned:
            self._warned.add(what)
            self.on_event("warn", f"MLflow {what} failed (the job goes on): {type(e).__name__}: {e}", {})

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_KEY_OK.sub("_", k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as e:
            self._warn("metric logging", e)

    def finish(self, status: str, output_dir: Path | None = None) -> None:
        try:
            if output_dir is not None and output_dir.is_dir():
                for name in ("manifest.json", "tuneloop_spec.json"):
                    if (output_dir / name).is_file():
                        self.client.log_artifact(self.run_id, str(output_dir / name))
                self.client.log_artifacts(self.run_id, str(output_dir), artifact_path="output")
        except Exception as e:
            self._warn("artifact upload", e)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            self._warn("closing the run", e)


def open_tracker(spec, job: dict[str, Any], on_event: Callable[[str, str, dict], None]) -> NoTracker:
    """The job's tracker; a server that cannot be reached at the start is a warning, not a failure."""
    uri = getattr(spec, "mlflow_uri", None)
    if not uri:
        return NoTracker()
    experiment = getattr(spec, "mlflow_experiment", None) or f"tuneloop-{spec.project}"
    run_name = getattr(spec, "mlflow_run_name", None) or job["id"]
    if uri.startswith(("http://", "https://")):  # a quick check first: MLflow's own client retries for minutes
        import urllib.request

        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        except Exception as e:
            on_event("warn", f"MLflow tracking at {uri} is unavailable (the job runs untracked): "
                             f"{type(e).__name__}: {e}", {})
            return NoTracker()
    try:
        return MlflowTracker(uri, experiment, run_name, job, on_event)
    except ImportError:
        on_event("warn", "MLflow tracking was asked for but mlflow is not installed; the job runs untracked.", {})
    except Exception as e:
        on_event("warn", f"MLflow tracking at {uri} is unavailable (the job runs untracked): "
                         f"{type(e).__name__}: {e}", {})
    return NoTracker()
