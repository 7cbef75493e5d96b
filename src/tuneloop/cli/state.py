"""tuneloop config [--json] | registry list [--json]: per-project state, registered models and their exports."""

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
    """List registered model versions with their lineage and their exports (`tuneloop export`)."""
    from tuneloop.settings import resolve_project

    db = store()
    packages = db.list_packages(group=group, project=resolve_project(project))
    exports: dict[tuple[str, int], list[dict]] = {}
    for artifact in db.list_artifacts(group):
        exports.setdefault((artifact["group_name"], artifact["version"]), []).append(artifact)
    for p in packages:
        p["artifacts"] = [{k: v for k, v in a.items() if k not in ("group_name", "version")}
                          for a in exports.get((p["group_name"], p["version"]), [])]
    if as_json:
        return print_json(packages)
    table = Table(title="Registered models", title_justify="left")
    for col in ("group", "version", "technique", "type", "base model", "dataset sha256", "validation", "job",
                "exports"):
        table.add_column(col, no_wrap=col not in ("validation", "exports"))
    for p in packages:
        table.add_row(p["group_name"], str(p["version"]), p["technique"], p["output_type"], p["base_model"],
                      p["dataset_sha256"][:12], _validation(p.get("metrics") or {}), p["job_id"],
                      "\n".join(_export(a) for a in p["artifacts"]) or "-")
    console().print(table)


def _export(artifact: dict) -> str:
    """One export of a version: format, quant, where it is, and its load-back check."""
    quant = f" {artifact['quant']}" if artifact.get("quant") and artifact["format"] != "merged" else ""
    verify = artifact.get("verify") or {}
    check = "" if not verify else (" (verified)" if verify.get("passed") else " (check failed)")
    return f"{artifact['format']}{quant}: {artifact['path']}{check}"


def _validation(metrics: dict) -> str:
    """The auto-evaluation on validation data, if the job had any: '-' otherwise."""
    names = (("eval_loss", "loss"), ("eval_perplexity", "ppl"), ("eval_exact_match", "EM"),
             ("eval_rewards/accuracies", "pref acc"), ("eval_rewards/margins", "margin"),
             ("eval_reward", "reward"))
    parts = [f"{label} {metrics[k]:.3g}" for k, label in names if isinstance(metrics.get(k), (int, float))]
    return ", ".join(parts) or "-"
