"""Following a job while it runs: a progress bar with step, loss and time left; Ctrl-C detaches."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.errors import JobFailedError

POLL_S = 0.5


def follow(svc, job_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Poll the job until it ends; relaunch its runner if it died. Exit 130 on Ctrl-C."""
    console = Console(stderr=True)
    job = svc.get(job_id)
    try:
        with Progress(TextColumn("[bold]{task.fields[state]}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TextColumn("left"),
                      TimeRemainingColumn(), console=console, disable=quiet or not console.is_terminal,
                      transient=True) as progress:
            task = progress.add_task(job_id, total=job["total_steps"] or None, state=job["state"], loss="loss -")
            last_step, last_print = -1, 0.0
            while job["state"] in ("queued", "running"):
                if svc.is_stale(job):
                    job = svc.recover(job)
                    time.sleep(2.0)
                loss = _progress_metrics(job)
                progress.update(task, completed=job["step"], total=job["total_steps"] or None, state=job["state"],
                                loss=loss)
                if not console.is_terminal and not quiet and job["step"] != last_step and job["step"]:
                    # in logs and pipes: a line every 10% of the steps or every 10 s, not every poll
                    tenth = max(1, (job["total_steps"] or 10) // 10)
                    if job["step"] // tenth != last_step // tenth or time.monotonic() - last_print > 10:
                        print(f"  {job['state']} step {job['step']}/{job['total_steps']} {loss}", file=sys.stderr)
                        last_step, last_print = job["step"], time.monotonic()
                time.sleep(POLL_S)
                job = svc.get(job_id)
    except KeyboardInterrupt:
        print(f"\nDetached from {job_id}; it keeps running.\n"
              f"  Follow it:  tuneloop status {job_id}\n  Stop it:    tuneloop cancel {job_id}", file=sys.stderr)
        raise typer.Exit(130)
    return job


def _progress_metrics(job: dict[str, Any]) -> str:
    """`loss 0.1234`; for RL jobs the live reward (mean ± std), KL and completion length."""
    if job["technique"] == "eval":
        return "evaluating"
    live = job.get("metrics") or {}
    if job["technique"] in RL_TECHNIQUES and "reward" in live:
        text = f"reward {live['reward']:.3f}±{live.get('reward_std', 0.0):.3f}"
        if "kl" in live:
            text += f" kl {live['kl']:.3g}"
        if "completions/mean_length" in live:
            text += f" len {live['completions/mean_length']:.0f}"
        if live.get("reward/failed"):
            text += f" failed {live['reward/failed']:.0%}"
        return text
    return f"loss {job['loss']:.4f}" if job["loss"] is not None else "loss -"


def render_result(svc, job: dict[str, Any]) -> None:
    """Results and the next-step commands for the output type; JobFailedError when not completed."""
    if job["state"] != "completed":
        raise JobFailedError(
            f"Job {job['id']} {job['state']}: {job['error'] or 'no reason recorded'}",
            details=[f"Logs: tuneloop logs {job['id']}"],
            hint=f"Fix the cause, then start a new job with --force:\n  tuneloop tune --technique "
                 f"{job['technique']} --dataset {shlex.quote(job['dataset'])} --force")
    metrics = job["metrics"] or {}
    pkg = svc.store.package_for_job(job["id"])
    print(f"✅ {job['id']} completed")
    print(f"   Output ({job['output_type']}): {job['output_path']}")
    if pkg:
        print(f"   Registered: {pkg['group_name']} v{pkg['version']} (base {pkg['base_model']}, "
              f"data {pkg['dataset_sha256'][:12]})")
    shown = {k: metrics[k] for k in ("train_loss", "final_loss", "final_rewards/accuracies", "final_rewards/margins",
                                     "final_reward", "final_reward_std", "final_kl", "reward_failed",
                                     "train_runtime", "eval_loss", "eval_exact_match", "eval_rewards/accuracies",
                                     "eval_rewards/margins", "eval_reward") if k in metrics}
    if shown:
        print("   " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    tracked = svc.store.list_events(job["id"], type="tracking")
    if tracked:
        print(f"   MLflow run: {tracked[-1]['data']['mlflow_url']}")
    print(f"   Curves: tuneloop metrics {job['id']} --plot {job['id']}.png")
    t = job["technique"]
    print("\nNext steps:")
    if job["output_type"] == "adapter":
        print(f"   tuneloop adapter add tuned-{t} --from-tune {t}")
    else:
        print(f"   tuneloop add-ic tuned-{t} --from-tune {t}")
    print(f"   tuneloop test --model tuned-{t}")
