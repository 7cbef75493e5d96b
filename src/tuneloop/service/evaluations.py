"""The evaluation service: `tuneloop eval` as a tracked job (status, logs, cancel), and the SDK's
evaluators run at once, both over evaluation/ (pure: it gets the store's lookups, the output
folder and the models folder from here).

    evals = open_services().evaluations            # EvaluationService(store, settings, jobs)
    job = evals.submit(EvalRequest(model="sft", dataset="val.jsonl"))   # checked first; the runner runs it
    result = evals.evaluate(EvalRequest(model="sft", dataset="val.jsonl", compare_base=True))
    result["model"]["loss"], result["output"]

The runner (service/runner.py) calls `run(job)` for an evaluation job: each phase is a step and
an event, a cancel request stops it at the next phase, the metrics go on the job.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneloop.errors import ValidationError
from tuneloop.evaluation.benchmark import run_benchmark
from tuneloop.evaluation.run import EvalRequest, check_request, evaluate
from tuneloop.models.resolve import ModelLookups
from tuneloop.service.models import store_lookups
from tuneloop.settings import Settings, resolve_project
from tuneloop.spec import write_spec_file
from tuneloop.store import Store

if TYPE_CHECKING:
    from tuneloop.service.jobs import JobService


class _Cancelled(Exception):
    pass


class EvaluationService:
    def __init__(self, store: Store, settings: Settings, jobs: "JobService | None" = None):
        self.store, self.settings, self.jobs = store, settings, jobs

    def lookups(self) -> ModelLookups:
        """Jobs, registered versions and deployed names for the model resolver (`--model sft`)."""
        return store_lookups(self.store)

    def output_folder(self, req: EvalRequest) -> Path:
        """`--output`, else a new folder under the project's evals/."""
        if req.output:
            return Path(req.output)
        return (self.settings.home / "projects" / resolve_project(req.project) / "evals" /
                (time.strftime("eval-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]))

    def check(self, req: EvalRequest) -> tuple[str, int]:
        """The model resolves and the data stages (registered names included): (technique, rows)."""
        return check_request(req, self.lookups(), self.store.get_dataset_version)

    # ---- at once (the SDK's evaluators) ---------------------------------------------------------
    def evaluate(self, req: EvalRequest, *, on_progress: Callable[[str], None] | None = None,
                 base_dir: str | None = None) -> dict[str, Any]:
        """Evaluate in this process; returns the result record (its `output` folder holds the report)."""
        return evaluate(req, output=self.output_folder(req), models_dir=self.settings.models_dir,
                        on_progress=on_progress, base_dir=base_dir, lookups=self.lookups(),
                        dataset_lookup=self.store.get_dataset_version)

    def benchmark(self, benchmark: str, model: str, *, project: str | None = None, samples: int | None = None,
                  output: str | None = None) -> dict[str, Any]:
        """An lm-eval benchmark on `model` (evaluation/benchmark.py), the model resolved with the store's lookups."""
        return run_benchmark(benchmark, model, project=project, samples=samples, output=output,
                             lookups=self.lookups())

    # ---- as a tracked job (tuneloop eval) -------------------------------------------------------
    def submit(self, req: EvalRequest, *, launch: bool = True) -> dict[str, Any]:
        """An evaluation as a tracked job: its model reference and data are checked here, so bad
        input creates nothing; the runner evaluates and writes the report to the job's output
        folder (or --output)."""
        project = resolve_project(req.project)
        technique, rows = self.check(req)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name, n = f"{project}-eval-{stamp}", 1
        while self.store.get_job(name) is not None:
            n += 1
            name = f"{project}-eval-{stamp}-{n}"
        job_dir = self.settings.jobs_dir(project) / name
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = asdict(req) | {"project": project, "technique": technique,
                              "output": req.output or str(job_dir / "output"), "dataset_rows": rows,
                              "base_dir": str(Path.cwd())}
        write_spec_file(job_dir / "spec.json", spec)
        row = dict(id=name, project=project, technique="eval", training_type=technique, model=req.model,
                   dataset=req.dataset, spec=spec, plan=None, job_dir=str(job_dir), dataset_rows=rows,
                   total_steps=0, active_key=None)
        if not self.store.insert_job(row):
            shutil.rmtree(job_dir, ignore_errors=True)
            raise ValidationError(f"Could not create evaluation job {name}.", param="model")
        self.store.add_event(name, f"job created: evaluate {req.model} on {req.dataset} ({rows} {technique} rows)")
        if launch and self.jobs is not None:
            self.jobs.launch(name)
        return self.store.get_job(name)

    def run(self, job: dict[str, Any], finish: Callable[..., None]) -> str:
        """Run a claimed evaluation job to its final state and return it; `finish(state, error=)`
        is the runner's final transition. Each phase is a step and an event; a cancel request
        stops it at the next phase."""
        job_id, spec = job["id"], job["spec"]
        req = EvalRequest(**{f.name: spec[f.name] for f in fields(EvalRequest) if f.name in spec})
        step = {"n": 0}

        def progress(message: str) -> None:
            current = self.store.get_job(job_id)
            if current and current["cancel_requested"]:
                raise _Cancelled()
            step["n"] += 1
            self.store.update_job(job_id, step=step["n"])
            self.store.add_event(job_id, message)

        self.store.add_event(job_id, f"evaluation started: {req.model} on {req.dataset}")
        try:
            result = self.evaluate(req, on_progress=progress, base_dir=spec.get("base_dir"))
        except _Cancelled:
            finish("cancelled", error="cancelled by user")
            self.store.add_event(job_id, "job cancelled", level="warn")
            return "cancelled"
        metrics = {**result["model"], **{f"base/{k}": v for k, v in (result["base"] or {}).items()}}
        self.store.update_job(job_id, output_path=result["output"], output_type="evaluation", metrics=metrics,
                              total_steps=step["n"])
        finish("completed")
        self.store.add_event(job_id, "evaluation completed: " + ", ".join(
            f"{k}={v:.4g}" for k, v in result["model"].items()) + f"; report {result['output']}/report.md",
            type="evaluation", data=metrics)
        return "completed"
