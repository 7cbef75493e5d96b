"""python -m tuneloop.service.runner JOB_ID [--expect-pid PID]

Runs one job in its own process: claim -> run the technique's recipe (training/recipes/: set up,
train resuming from the last checkpoint, validate, save output and manifest) -> register -> record
config state. A job on several processes (`--num-processes N`, `--backend ray`) runs its recipe on
ranks started from here (service/launch.py, service/ray_backend.py); this process still claims,
heartbeats and registers rank 0's output. Evaluation jobs (`tuneloop eval`) run through the evaluation service
(service/evaluations.py) instead of a recipe. Started detached by `tuneloop tune`; every state
change goes to the database, so nothing lives only in this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.models.resolve import resolve
from tuneloop.registry import register_output
from tuneloop.service.evaluations import EvaluationService
from tuneloop.service.jobs import dataset_slug
from tuneloop.service.launch import ProcessesLost, launch_file, run_local
from tuneloop.settings import load_settings
from tuneloop.spec import JobSpec
from tuneloop.store import Store, open_store
from tuneloop.store.db import utcnow
from tuneloop.tracking import open_tracker
from tuneloop.training.plan import Plan

if TYPE_CHECKING:
    from tuneloop.training.recipes import RecipeResult

log = logging.getLogger("tuneloop.runner")
HEARTBEAT_S = 5.0


class Heartbeat(threading.Thread):
    """Stamps the job every few seconds, also while one long step runs."""

    def __init__(self, store: Store, job_id: str):
        super().__init__(daemon=True)
        self.store, self.job_id = store, job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                self.store.update_job(self.job_id, heartbeat_at=utcnow())
            except Exception:  # a locked database must not kill training
                log.exception("heartbeat failed")


def run_job(store: Store, job_id: str, expect_pid: int | None = None) -> str:
    """Run the job to a final state and return it."""
    settings = load_settings()
    job = store.get_job(job_id)
    if job is None:
        raise SystemExit(f"no job {job_id}")
    if expect_pid is not None and job["pid"] != expect_pid:
        log.info("job %s was already restarted by another process", job_id)
        return job["state"]
    if not store.claim_job(job_id, os.getpid(), socket.gethostname(), expect_pid):
        log.info("job %s is not claimable (state %s)", job_id, job["state"])
        return job["state"]
    heartbeat = Heartbeat(store, job_id)
    heartbeat.start()
    if job["technique"] == "eval":
        try:
            return EvaluationService(store, settings).run(
                job, lambda state, error=None: _finish(store, job_id, state=state, error=error))
        except Exception as e:
            store.add_event(job_id, f"job failed: {e}", level="error", data={"traceback": traceback.format_exc()})
            _finish(store, job_id, state="failed", error=f"{type(e).__name__}: {e}")
            return "failed"
        finally:
            heartbeat.stopped.set()
    tracker = _tracker(store, job)
    try:
        state = _tune(store, settings, job, tracker)
        tracker.finish("FINISHED" if state == "completed" else "KILLED",
                       Path(job["job_dir"]) / "output" if state == "completed" else None)
        return state
    except ProcessesLost as e:  # like this runner killed with kill -9: the job stays resumable, not failed
        store.add_event(job_id, f"job stopped: {e}. Re-run the same `tuneloop tune` command to resume from the "
                                "last checkpoint.", level="error", data={"lost": str(e)})
        return "lost"
    except Exception as e:  # the job fails with its reason; the traceback goes to the events
        trace = getattr(e, "trace", "") or traceback.format_exc()   # a rank's own traceback (service/launch.py)
        store.add_event(job_id, f"job failed: {e}", level="error", data={"traceback": trace})
        _finish(store, job_id, state="failed", error=f"{type(e).__name__}: {e}")
        tracker.finish("FAILED")
        return "failed"
    finally:
        heartbeat.stopped.set()


def _tracker(store: Store, job: dict[str, Any]):
    def on_event(level: str, message: str, data: dict[str, Any]) -> None:
        store.add_event(job["id"], message, level=level, type="tracking" if "mlflow_url" in data else "message",
                        data=data or None)

    return open_tracker(JobSpec.from_dict(job["spec"]), job, on_event)


def _tune(store: Store, settings, job: dict[str, Any], tracker) -> str:
    """A training job: its technique's recipe trains and saves the output, then it is registered."""
    from tuneloop.training.recipes import JobContext, recipe_for  # torch, transformers, TRL

    spec = JobSpec.from_dict(job["spec"])
    model = resolve(spec.model, technique=spec.technique, training_type=spec.training_type,
                    models_dir=settings.models_dir)
    model_dir, targets = model.adapter or model.load_path(), model.lora_targets  # RL loads an adapter's base itself
    plan = Plan(**job["plan"])
    if plan.num_processes > 1 or plan.nodes > 1 or plan.backend != "local":
        result = _run_scaled(store, settings, job, plan, model_dir, targets, tracker)
    else:
        ctx = JobContext(store=store, job=job, spec=spec, plan=plan, model_dir=model_dir,
                         lora_targets=targets, models_dir=settings.models_dir, tracker=tracker)
        result = recipe_for(spec.technique)(ctx).run()
    if result is None:
        _finish(store, job["id"], state="cancelled", error="cancelled by user")
        store.add_event(job["id"], "job cancelled", level="warn")
        return "cancelled"
    return _register(store, spec, job, result)


def _run_scaled(store: Store, settings, job: dict[str, Any], plan: Plan, model_dir: str, targets: Any,
                tracker) -> RecipeResult | None:
    """The recipe on several processes: torchelastic's agent here (service/launch.py) or Ray Train
    workers (service/ray_backend.py); rank 0's result, or None when cancelled."""
    from tuneloop.training.recipes import RecipeResult

    path = launch_file(job, model_dir=model_dir, lora_targets=targets, models_dir=settings.models_dir)
    if plan.backend == "ray":
        from tuneloop.service.ray_backend import run_on_ray   # the only module that imports ray

        out = run_on_ray(store, settings, job, plan, path, tracker)
    else:
        out = run_local(store, job, plan, path)
    if out["cancelled"]:
        return None
    return RecipeResult(Path(out["output_dir"]), out["output_type"], out["metrics"])


def _register(store: Store, spec: JobSpec, job: dict[str, Any], result: RecipeResult) -> str:
    """Copy the output out (--output-bucket), register it as the group's next version, record the
    project's config state, and complete the job."""
    job_id = job["id"]
    output_type, metrics = result.output_type, result.metrics
    final_path = _copy_out(spec, result.output_dir, job_id)
    version = register_output(store, spec, job_id=job_id, output_path=final_path, output_type=output_type,
                              dataset_sha256=job["dataset_sha256"], metrics=metrics)
    _record_state(store, spec, final_path, output_type)
    store.update_job(job_id, output_path=final_path, output_type=output_type, metrics={**metrics, "version": version})
    _finish(store, job_id, state="completed")
    store.add_event(job_id, f"job completed: {output_type} at {final_path} (registered as {spec.group} v{version})")
    return "completed"


def _copy_out(spec: JobSpec, out_dir: Path, job_id: str) -> str:
    """Copy the output to --output-bucket (any fsspec URL or folder) when one was given."""
    if not spec.output_uri:
        return str(out_dir)
    import fsspec

    target = spec.output_uri.rstrip("/") + f"/{job_id}/output"
    fs, path = fsspec.core.url_to_fs(target)
    fs.put(str(out_dir), path, recursive=True)
    return target


def _record_state(store: Store, spec: JobSpec, path: str, output_type: str) -> None:
    t = spec.technique.upper()
    slug = dataset_slug(spec.dataset).upper().replace("-", "_")
    kind = "ADAPTER" if output_type == "adapter" else "MODEL"
    store.set_config(spec.project, {f"TUNE_{kind}_PATH_{t}": path, f"TUNE_{kind}_PATH_{t}_{slug}": path,
                                    "TUNE_OUTPUT_PATH_LATEST": path, "TUNE_OUTPUT_TYPE_LATEST": output_type})


def _finish(store: Store, job_id: str, *, state: str, error: str | None = None) -> None:
    """Final transition, unless the job was already superseded (cancelled by --force)."""
    current = store.get_job(job_id)
    if current and current["state"] in ("queued", "running"):
        store.update_job(job_id, state=state, error=error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuneloop.service.runner")
    parser.add_argument("job_id")
    parser.add_argument("--expect-pid", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    store = open_store(load_settings().database_url)
    state = run_job(store, args.job_id, args.expect_pid)
    return 0 if state in ("completed", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
