"""tuneloop adapter add|list|remove, add-ic, remove-ic, deploy, deployment: what a project serves.

    tuneloop adapter add tuned-sft --from-tune [sft|sft-SLUG]     # or --weights PATH
    tuneloop add-ic tuned-full --from-tune sft                    # or --model-data PATH
    tuneloop deploy --model-data PATH --force-ic                  # replace the base
    tuneloop deployment                                           # base, adapters, ICs, server

When the project's server is running, changes are hot-loaded into it; either way they are
recorded, so the next `tuneloop serve` serves the same set.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from tuneloop.cli.common import console, handle_errors, print_json, services
from tuneloop.settings import resolve_project

adapter_app = typer.Typer(help="LoRA adapters served on the base model (hot-loaded into a running server).",
                          no_args_is_help=True)

PROJECT = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT", help="Project (default: default).")
API_KEY = typer.Option(None, "--api-key", envvar="TUNELOOP_API_KEY", help="The running server's API key, if it has one.")
FROM_TUNE = typer.Option(False, "--from-tune", help="Use a tune job's output: REF is T or T-SLUG (default: the latest).")


def deployments(project: Optional[str], api_key: Optional[str] = None):
    return services().deployments(resolve_project(project), api_key=api_key)


def _render(change, verb: str, as_json: bool) -> None:
    if as_json:
        return print_json(change.__dict__)
    for w in change.warnings:
        print(w)
    what = {"adapter": "Adapter", "ic": "Inference component", "base": "Base model"}[change.kind]
    where = "loaded into the running server" if change.loaded else "recorded; `tuneloop serve` will serve it"
    print(f"✅ {what} {change.name} {verb}" + (f" from {change.path}" if change.path else "") + f" ({where}).")
    if change.lineage:
        print(f"   lineage: {change.lineage}")
    if change.kind != "base" and verb == "added":
        print(f"Try it: tuneloop test --model {change.name} --prompt \"...\"")


@adapter_app.command("add")
@handle_errors
def adapter_add(name: str = typer.Argument(..., help="Name clients send as `model`."),
                ref: Optional[str] = typer.Argument(None, metavar="[T|T-SLUG]", help="With --from-tune: which output."),
                from_tune: bool = FROM_TUNE,
                weights: Optional[str] = typer.Option(None, "--weights", help="Adapter folder, .tar.gz or URL."),
                project: Optional[str] = PROJECT, api_key: Optional[str] = API_KEY,
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Deploy a LoRA adapter on the base model."""
    change = deployments(project, api_key).add_adapter(name, from_tune=from_tune, ref=ref, weights=weights)
    _render(change, "added", as_json)


@adapter_app.command("list")
@handle_errors
def adapter_list(project: Optional[str] = PROJECT, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the deployed adapters with their lineage."""
    deps = deployments(project)
    rows = deps.deployed("adapter")
    if as_json:
        return print_json(rows)
    if not rows:
        print(f"No adapters deployed in project {deps.project!r}. Add one: tuneloop adapter add NAME --from-tune")
        return
    table = Table(title=f"Adapters on {deps.base_name()} (project {deps.project!r})", title_justify="left")
    for col in ("name", "source", "job", "version", "path"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["source"], r["job_id"] or "-",
                      f"{r['group_name']} v{r['version']}" if r["group_name"] else "-", r["path"])
    console().print(table)


@adapter_app.command("remove")
@handle_errors
def adapter_remove(name: str = typer.Argument(...), project: Optional[str] = PROJECT,
                   api_key: Optional[str] = API_KEY) -> None:
    """Stop serving an adapter (unloaded from a running server) and forget it."""
    change = deployments(project, api_key).remove_adapter(name)
    print(f"✅ Adapter {name} removed" + (" and unloaded from the running server." if change.loaded else "."))


@handle_errors
def add_ic(name: str = typer.Argument(..., help="Name clients send as `model`."),
           ref: Optional[str] = typer.Argument(None, metavar="[T|T-SLUG]", help="With --from-tune: which output."),
           from_tune: bool = FROM_TUNE,
           model_data: Optional[str] = typer.Option(None, "--model-data",
                                                    help="Full model folder, GGUF file, .tar.gz or URL."),
           project: Optional[str] = PROJECT, api_key: Optional[str] = API_KEY,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Serve a full model (a full-rank tune output) as its own inference component."""
    change = deployments(project, api_key).add_ic(name, from_tune=from_tune, ref=ref, model_data=model_data)
    _render(change, "added", as_json)


@handle_errors
def remove_ic(name: str = typer.Argument(...), project: Optional[str] = PROJECT,
              api_key: Optional[str] = API_KEY) -> None:
    """Stop serving an inference component and forget it."""
    change = deployments(project, api_key).remove_ic(name)
    print(f"✅ Inference component {name} removed" + (" from the running server." if change.loaded else "."))


@handle_errors
def deploy(model: Optional[str] = typer.Option(None, "--model", help="Base: catalog id, built-in or model folder."),
           model_data: Optional[str] = typer.Option(None, "--model-data", help="A full model (tune output) as base."),
           force_ic: bool = typer.Option(False, "--force-ic", help="Replace the current base with --model-data."),
           project: Optional[str] = PROJECT, api_key: Optional[str] = API_KEY,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Set the deployment's base model (swapped in a running server)."""
    change = deployments(project, api_key).deploy(model=model, model_data=model_data, force_ic=force_ic)
    _render(change, "deployed", as_json)


@handle_errors
def deployment(project: Optional[str] = PROJECT, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show what the project serves, where from, and its running server."""
    state = deployments(project).state()
    if as_json:
        return print_json(state)
    lineage = f" (job {state['base_job_id']}, {state['base_group']} v{state['base_version']})" \
        if state["base_job_id"] else ""
    print(f"Project {state['project']!r}: base {state['base_model']}{lineage}")
    for kind, key in (("adapter", "adapters"), ("inference component", "inference_components")):
        for d in state[key]:
            origin = f"job {d['job_id']}, {d['group_name']} v{d['version']}" if d["job_id"] else d["source"]
            print(f"  {kind} {d['name']}: {d['path']} ({origin})")
    server = state["server"]
    print(f"Server: {server['url']}/v1 (pid {server['pid']}, {server['engine']})" if server
          else "Server: not running (start it with: tuneloop serve)")
