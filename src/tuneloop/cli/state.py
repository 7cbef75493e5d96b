"""tuneloop config [--json] | registry list [--json]: per-project state and registered models."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from tuneloop.cli.common import console, handle_errors, print_json, store

registry_app = typer.Typer(help="Model package groups and their versions.", no_args_is_help=True)


@handle_errors
def config(project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
           as_json: bool = typer.Option(False, "--json", help="One flat JSON object of the keys.")) -> None:
    """Show the project's tune state (the seed's do/config keys: TUNE_ADAPTER_PATH_SFT, ...)."""
    from tuneloop.settings import resolve_project

    values = store().get_config(resolve_project(project))
    if as_json:
        return print_json(values)
    for key, value in values.items():
        print(f"{key}={value}")


@registry_app.command("list")
@handle_errors
def registry_list(group: Optional[str] = typer.Option(None, "--group", help="Only this model package group."),
                  project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """List registered model versions with their lineage."""
    from tuneloop.settings import resolve_project

    packages = store().list_packages(group=group, project=resolve_project(project))
    if as_json:
        return print_json(packages)
    table = Table(title="Registered models", title_justify="left")
    for col in ("group", "version", "technique", "type", "base model", "dataset sha256", "validation", "job"):
        table.add_column(col, no_wrap=col != "validation")
    for p in packages:
        table.add_row(p["group_name"], str(p["version"]), p["technique"], p["output_type"], p["base_model"],
                      p["dataset_sha256"][:12], _validation(p.get("metrics") or {}), p["job_id"])
    console().print(table)


def _validation(metrics: dict) -> str:
    """The auto-evaluation on validation data, if the job had any: '-' otherwise."""
    names = (("eval_loss", "loss"), ("eval_perplexity", "ppl"), ("eval_exact_match", "EM"),
             ("eval_rewards/accuracies", "pref acc"), ("eval_rewards/margins", "margin"),
             ("eval_reward", "reward"))
    parts = [f"{label} {metrics[k]:.3g}" for k, label in names if isinstance(metrics.get(k), (int, float))]
    return ", ".join(parts) or "-"
