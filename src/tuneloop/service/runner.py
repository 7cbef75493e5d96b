"""python -m tuneloop.service.runner JOB_ID [--expect-pid PID]

Runs one job in its own process: claim -> load -> train (resuming from the last checkpoint) ->
save output and manifest -> register -> record config state. Started detached by `tuneloop tune`;
every state change goes to the database, so nothing lives only in this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from tuneloop.registry import register_output
from tuneloop.service.jobs import dataset_slug
from tuneloop.settings import load_settings
from tuneloop.spec import JobSpec
from tuneloop.store import Store, open_store
from tuneloop.training.plan import Plan

log = logging.getLogger("tuneloop.runner")
HEARTBEAT_S = 5.0


class Heartbeat(threading.Thread):
    """Stamps the job every few seconds, also while one long step runs."""

    def __init__(self, store: Store, job_id: str):
        super().__init__(daemon=True)
        self.store, self.job_id = store, job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        from tuneloop.store.db import utcnow

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
            return _evaluate(store, job)
        except Exception as e:
            store.add_event(job_id, f"job failed: {e}", level="error", data={"traceback": traceback.format_exc()})
            _finish(store, job_id, state="failed", error=f"{type(e).__name__}: {e}")
            return "failed"
        finally:
            heartbeat.stopped.set()
    tracker = _tracker(store, job)
    try:
        state = _train(store, settings, job, tracker)
        tracker.finish("FINISHED" if state == "completed" else "KILLED",
                       Path(job["job_dir"]) / "output" if state == "completed" else None)
        return state
    except Exception as e:  # the job fails with its reason; the traceback goes to the events
        store.add_event(job_id, f"job failed: {e}", level="error", data={"traceback": traceback.format_exc()})
        _finish(store, job_id, state="failed", error=f"{type(e).__name__}: {e}")
        tracker.finish("FAILED")
        return "failed"
    finally:
        heartbeat.stopped.set()


class _Cancelled(Exception):
    pass


def _evaluate(store: Store, job: dict[str, Any]) -> str:
    """An evaluation job (`tuneloop eval`): each phase is a step and an event; a cancel request
    stops it at the next phase."""
    from dataclasses import fields

    from tuneloop.evaluation.run import EvalRequest, evaluate
    from tuneloop.service.models import store_lookups

    job_id, spec = job["id"], job["spec"]
    req = EvalRequest(**{f.name: spec[f.name] for f in fields(EvalRequest) if f.name in spec})
    step = {"n": 0}

    def progress(message: str) -> None:
        current = store.get_job(job_id)
        if current and current["cancel_requested"]:
            raise _Cancelled()
        step["n"] += 1
        store.update_job(job_id, step=step["n"])
        store.add_event(job_id, message)

    store.add_event(job_id, f"evaluation started: {req.model} on {req.dataset}")
    try:
        result = evaluate(req, on_progress=progress, base_dir=spec.get("base_dir"),
                          lookups=store_lookups(store))
    except _Cancelled:
        _finish(store, job_id, state="cancelled", error="cancelled by user")
        store.add_event(job_id, "job cancelled", level="warn")
        return "cancelled"
    metrics = {**result["model"], **{f"base/{k}": v for k, v in (result["base"] or {}).items()}}
    store.update_job(job_id, output_path=result["output"], output_type="evaluation", metrics=metrics,
                     total_steps=step["n"])
    _finish(store, job_id, state="completed")
    store.add_event(job_id, "evaluation completed: " + ", ".join(f"{k}={v:.4g}" for k, v in result["model"].items())
                    + f"; report {result['output']}/report.md", type="evaluation", data=metrics)
    return "completed"


def _tracker(store: Store, job: dict[str, Any]):
    from tuneloop.tracking import open_tracker

    def on_event(level: str, message: str, data: dict[str, Any]) -> None:
        store.add_event(job["id"], message, level=level, type="tracking" if "mlflow_url" in data else "message",
                        data=data or None)

    return open_tracker(JobSpec.from_dict(job["spec"]), job, on_event)


def _train(store: Store, settings, job: dict[str, Any], tracker) -> str:
    from tuneloop.training import common, dpo, sft

    job_id = job["id"]
    spec = JobSpec.from_dict(job["spec"])
    plan = Plan(**job["plan"])
    work = Path(job["job_dir"])
    lora = spec.training_type == "lora"
    from tuneloop.models.resolve import resolve

    model = resolve(spec.model, technique=spec.technique, training_type=spec.training_type,
                    models_dir=settings.models_dir)
    model_dir, targets = model.adapter or model.load_path(), model.lora_targets  # RL loads an adapter's base itself
    cancelled = {"flag": False}

    rl_technique = spec.technique in ("rlvr", "rlaif")

    def on_metrics(step: int, total: int, metrics: dict[str, float]) -> None:
        loss = metrics.get("loss")
        live = {"metrics": {k: metrics[k] for k in RL_LIVE if k in metrics}} if rl_technique and "reward" in metrics else {}
        store.update_job(job_id, step=step, total_steps=total, **({"loss": loss} if loss is not None else {}), **live)
        store.add_event(job_id, f"step {step}/{total}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
                        type="metrics", data={"step": step, **metrics})
        tracker.log_metrics(step, metrics)

    def should_stop() -> bool:
        current = store.get_job(job_id)
        cancelled["flag"] = bool(current and current["cancel_requested"])
        return cancelled["flag"]

    def on_save(step: int) -> None:
        store.add_event(job_id, f"checkpoint saved at step {step}", data={"step": step})

    extra: dict[str, Any] = {}
    saver = common.save_output
    if rl_technique:
        from tuneloop.training import rl

        rewards = _reward_engine(store, settings, spec, plan, job_id)
        extra, saver = {"engine": rewards}, rl.save_output
        builder = rl.build_trainer
    else:
        builder = {"sft": sft.build_trainer, "dpo": dpo.build_trainer}[spec.technique]
    try:
        return _run(store, job, spec, plan, work, lora, model_dir, builder, saver, extra, on_metrics, should_stop,
                    on_save, cancelled, targets, tracker)
    finally:
        if "engine" in extra:
            extra["engine"].ctx.close()


RL_LIVE = ("reward", "reward_std", "kl", "completions/mean_length", "completions/clipped_ratio", "reward/failed")


def _reward_engine(store: Store, settings, spec: JobSpec, plan: Plan, job_id: str):
    """The job's rewards: its reward (rows' reward_model override it), judge and evaluators;
    each distinct reward error becomes one event with its traceback."""
    from tuneloop.rewards.engine import RewardEngine
    from tuneloop.rewards.functions import RewardContext

    ctx = RewardContext(base_dir=spec.reward_base_dir, judge_model=spec.judge_model,
                        evaluator_lookup=getattr(store, "get_evaluator_version", None), models_dir=settings.models_dir,
                        timeout_s=plan.reward_timeout_s or 10.0, unsafe_sandbox=spec.unsafe_reward_sandbox)

    def on_event(level: str, message: str, data: dict[str, Any]) -> None:
        store.add_event(job_id, message, level=level, data=data)

    default = spec.reward_function if spec.technique == "rlvr" else spec.reward_prompt
    return RewardEngine(ctx, default, threshold=plan.reward_failure_threshold if plan.reward_failure_threshold
                        is not None else 0.2, on_event=on_event)


def _run(store: Store, job: dict[str, Any], spec: JobSpec, plan: Plan, work: Path, lora: bool, model_dir: str,
         builder, saver, extra: dict[str, Any], on_metrics, should_stop, on_save, cancelled: dict[str, bool],
         targets, tracker) -> str:
    from tuneloop.training import common

    job_id = job["id"]
    validation = work / "data" / "validation.jsonl"
    if spec.technique in ("sft", "dpo") and validation.is_file():
        extra = {**extra, "eval_path": validation}
    trainer, tokenizer = builder(model_dir=model_dir, data_path=work / "data" / "train.jsonl", work_dir=work,
                                 plan=plan, lora=lora, target_modules=targets,
                                 callbacks=[common.make_callback(on_metrics, should_stop, on_save)], **extra)
    resume = common.last_checkpoint(work / "checkpoints")
    store.add_event(job_id, f"training started on {plan.device} ({plan.precision}), {plan.total_steps} steps"
                    + (f"; resuming from {Path(resume).name}" if resume else ""),
                    data={"resume_from": resume})
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    if cancelled["flag"]:
        _finish(store, job_id, state="cancelled", error="cancelled by user")
        store.add_event(job_id, "job cancelled", level="warn")
        return "cancelled"
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    for entry in reversed(trainer.state.log_history):  # last logged technique metrics (e.g. DPO accuracies)
        if "loss" in entry:
            metrics.update({f"final_{k}": float(v) for k, v in entry.items()
                            if isinstance(v, (int, float)) and k not in ("epoch", "step")})
            break
    metrics["wall_s"] = round(time.monotonic() - started, 2)
    scores = None
    if "eval_path" in extra:
        from tuneloop.evaluation.auto import evaluate_validation

        scores = evaluate_validation(trainer, tokenizer, spec.technique, validation)
    elif "engine" in extra and validation.is_file():
        from tuneloop.evaluation.auto import evaluate_rl_validation

        engine = extra["engine"]
        scores = evaluate_rl_validation(trainer, tokenizer, engine.ctx, engine.default_ref, validation,
                                        plan.max_response_length or 64)
    if scores is not None:
        metrics.update(scores)
        store.add_event(job_id, "validation: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()),
                        type="evaluation", data=scores)
    if "engine" in extra:
        metrics.update(extra["engine"].summary())
    tracker.log_metrics(trainer.state.global_step, {k: v for k, v in metrics.items() if not k.startswith("final_")})
    out_dir = work / "output"
    output_type = saver(trainer, tokenizer, out_dir, lora)
    manifest = {
        "job": job_id, "spec": job["spec"], "plan": job["plan"], "base_model": spec.model,
        "base_model_path": model_dir, "output_type": output_type,
        "dataset": {"source": spec.dataset, "sha256": job["dataset_sha256"], "rows": job["dataset_rows"]},
        "metrics": metrics, "versions": common.versions(),
    }
    common.write_json(out_dir / "manifest.json", manifest)
    common.write_json(out_dir / "tuneloop_spec.json", job["spec"])
    final_path = _copy_out(spec, out_dir, job_id)
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
