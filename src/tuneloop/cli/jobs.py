"""tuneloop status [JOB] | logs JOB [--follow] | cancel JOB: watching and stopping jobs."""

from __future__ import annotations

import sys
import time
from typing import Optional

import typer
from rich.table import Table

from tuneloop.catalog import TECHNIQUES
from tuneloop.cli.common import console, duration, handle_errors, print_json, public_job, service, store


def _jobs_table(jobs: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("job", no_wrap=True)
    for col in ("technique", "type", "state", "step", "loss", "time", "output / error"):
        table.add_column(col)
    for j in jobs:
        loss = f"{j['loss']:.4f}" if j["loss"] is not None else "-"
        table.add_row(j["id"], j["technique"], j["training_type"], j["state"], f"{j['step']}/{j['total_steps']}",
                      loss, duration(j), j["output_type"] or (j["error"] or "")[:80])
    return table


def tune_status(project: Optional[str], as_json: bool) -> None:
    """The latest job of each technique in the project (the seed's `do/tune --status`)."""
    from tuneloop.settings import resolve_project

    project = resolve_project(project)
    db = store()
    latest = [j for t in TECHNIQUES if (j := db.latest_job(project, t))]
    if as_json:
        return print_json([public_job(j) for j in latest])
    if not latest:
        print(f"No tune jobs in project {project!r} yet. Start one: tuneloop tune --technique sft --dataset FILE")
        return
    console().print(_jobs_table(latest, f"Tracked tune jobs in project {project!r}"))


@handle_errors
def status(job: Optional[str] = typer.Argument(None, help="Job name (default: all jobs of the project)."),
           project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one job, or every job of the project."""
    from tuneloop.settings import resolve_project

    svc = service()
    if job is None:
        jobs = svc.store.find_jobs(resolve_project(project))
        if as_json:
            return print_json([public_job(j) for j in jobs])
        return console().print(_jobs_table(jobs, f"Jobs in project {resolve_project(project)!r}"))
    row = svc.resolve_job(job, project)
    if as_json:
        return print_json(public_job(row) | {"stale": svc.is_stale(row)})
    for key, value in public_job(row).items():
        if value not in (None, {}, ""):
            print(f"{key:<16}{value}")
    if svc.is_stale(row):
        print("\n⚠️  Its runner process is gone. Re-run the same `tuneloop tune` command to resume from the last "
              "checkpoint.")


@handle_errors
def logs(job: str = typer.Argument(..., help="Job name, or a technique for its latest job."),
         follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
         project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT")) -> None:
    """Print a job's events (messages and metrics), oldest first."""
    svc = service()
    row = svc.resolve_job(job, project)
    last = 0
    try:
        while True:
            for e in svc.store.list_events(row["id"], after_id=last):
                stamp = e["created_at"].strftime("%H:%M:%S")
                print(f"{stamp} {e['level']:<5} {e['message']}", flush=True)
                last = e["id"]
            row = svc.get(row["id"])
            if not follow or row["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        raise typer.Exit(130)


@handle_errors
def cancel(job: str = typer.Argument(..., help="Job name, or a technique for its latest job."),
           project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT")) -> None:
    """Stop a queued or running job (it ends as cancelled at its next step)."""
    svc = service()
    row = svc.cancel(svc.resolve_job(job, project)["id"])
    if row["state"] in ("queued", "running"):
        print(f"Cancel requested for {row['id']}; it stops at its next step.")
    else:
        print(f"{row['id']} is {row['state']}.", file=sys.stderr if row["state"] != "cancelled" else sys.stdout)


@handle_errors
def metrics(job: str = typer.Argument(..., help="Job name, or a technique for its latest job."),
            plot: Optional[str] = typer.Option(None, "--plot", help="Write the curves to this PNG file."),
            project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
            as_json: bool = typer.Option(False, "--json", help="Every recorded series as JSON.")) -> None:
    """A job's curves: loss or reward, learning rate and the technique's metrics, per step."""
    from pathlib import Path

    from tuneloop.curves import panels, series
    from tuneloop.errors import ValidationError

    svc = service()
    row = svc.resolve_job(job, project)
    curves = series(svc.store.list_events(row["id"], type="metrics"))
    if not curves:
        raise ValidationError(f"Job {row['id']} has no metrics yet (it is {row['state']}, step {row['step']}).",
                              hint=f"Metrics arrive every logging step; follow it with: tuneloop logs {row['id']} -f",
                              param="job")
    drawn = None
    if plot:
        from tuneloop.curves import plot as draw

        drawn = draw(curves, Path(plot), f"{row['id']} ({row['technique']}, {row['training_type']}, {row['state']})")
    if as_json:
        return print_json({"job": row["id"], "state": row["state"], "plot": plot, "panels": drawn,
                           "series": {k: [{"step": s, "value": v} for s, v in pts] for k, pts in curves.items()}})
    names = panels(curves)
    table = Table(title=f"{row['id']} metrics per step", title_justify="left")
    table.add_column("step", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    steps = sorted({s for n in names for s, _ in curves[n]})
    if len(steps) > 40:  # the first, the last and evenly spread steps between
        keep = {steps[round(i * (len(steps) - 1) / 39)] for i in range(40)}
        steps = [s for s in steps if s in keep]
    values = {n: dict(curves[n]) for n in names}
    for s in steps:
        table.add_row(str(s), *[f"{values[n][s]:.4g}" if s in values[n] else "" for n in names])
    console().print(table)
    if plot:
        print(f"Curves ({', '.join(drawn)}) written to {plot}")
