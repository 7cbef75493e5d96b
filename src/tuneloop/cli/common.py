"""What every command shares: the service, rendering of errors (once, here), JSON output."""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime
from typing import Any, Callable

import typer

from tuneloop.errors import TuneloopError


def console():
    """Rich console; as wide as a log line (not 80 columns) when output goes to a pipe or file."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def services():
    """The store and the services over it (tuneloop.service.app), each built on first use."""
    from tuneloop.service.app import open_services

    return open_services()


def store():
    """The store alone, for read-only commands (status, config, registry): no service imports."""
    return services().store


def service():
    """The job service (tune, status, logs, cancel, eval)."""
    return services().jobs


def handle_errors(fn: Callable) -> Callable:
    """Render a TuneloopError as `❌ message`, details and hint on stderr; exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TuneloopError as e:
            print(e.render(), file=sys.stderr)
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            raise typer.Exit(130)

    return wrapper


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat(timespec="seconds") + "Z"
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_default, sort_keys=False))


def public_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job row as users see it (no internal columns)."""
    keep = ("id", "project", "technique", "training_type", "model", "dataset", "state", "step", "total_steps",
            "loss", "error", "output_path", "output_type", "dataset_sha256", "dataset_rows", "metrics",
            "created_at", "started_at", "finished_at", "attempts", "job_dir")
    return {k: job.get(k) for k in keep}


def duration(job: dict[str, Any]) -> str:
    start, end = job.get("started_at"), job.get("finished_at")
    if not start:
        return "-"
    from tuneloop.store.db import utcnow

    seconds = ((end or utcnow()) - start).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"
