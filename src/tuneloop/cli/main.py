"""tuneloop --help: the command line. Commands import their heavy parts lazily, so paths that do
not train (help, status, config) answer without loading torch or TRL."""

from __future__ import annotations

import os
from typing import Optional

import typer

from tuneloop.cli import catalog, jobs, state, tune
from tuneloop.cli import datasets
from tuneloop.cli import evaluate, evaluators
from tuneloop.cli import deploy, serve
from tuneloop.cli import export
from tuneloop.cli import keys, webhooks
from tuneloop.cli import ui

app = typer.Typer(name="tuneloop", help="Self-hosted model customization: tune -> adapter -> deploy -> test.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("tune", context_settings={"help_option_names": ["--help", "-h"]})(tune.tune)
app.command("models")(catalog.models)
app.command("status")(jobs.status)
app.command("logs")(jobs.logs)
app.command("cancel")(jobs.cancel)
app.command("metrics")(jobs.metrics)
app.command("eval")(evaluate.eval_)
app.command("config")(state.config)
app.add_typer(state.registry_app, name="registry")
app.add_typer(datasets.app, name="datasets")
app.add_typer(evaluators.app, name="evaluators")
app.command("serve")(serve.serve)
app.command("test")(serve.test)
app.add_typer(deploy.adapter_app, name="adapter")
app.command("add-ic")(deploy.add_ic)
app.command("remove-ic")(deploy.remove_ic)
app.command("deploy")(deploy.deploy)
app.command("deployment")(deploy.deployment)
app.command("export")(export.export)
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks.app, name="webhooks")
app.command("ui")(ui.ui)


@app.command("demo")
def demo(keep: bool = typer.Option(False, "--keep", help="Keep the demo's TUNELOOP_HOME instead of a temporary one."),
         model: Optional[str] = typer.Option(None, "--model", help="Run the loop on this model: a folder, a catalog "
                                             "id or a .gguf file [default: tuneloop/tiny-qwen3]."),
         dry_run: bool = typer.Option(False, "--dry-run", help="Resolve the model, stage the data and print each "
                                      "job's plan; train nothing.")) -> None:
    """Run the whole loop on the built-in model: base answers, SFT, tuned answers, DPO, summary."""
    from tuneloop.cli.demo import run_demo

    raise typer.Exit(run_demo(keep=keep, model=model, dry_run=dry_run))


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
