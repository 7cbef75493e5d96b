"""tuneloop tune --technique sft --dataset train.jsonl [options]: the do/tune command. Its
hyperparameter options (--epochs, --kl-coef, ...) are generated from tuneloop.spec's registry."""

from __future__ import annotations

import inspect
import sys
from typing import Any, List, Optional

import typer

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.cli.common import handle_errors, print_json, public_job, service
from tuneloop.errors import ValidationError
from tuneloop.spec import HYPERPARAMETERS, Hyperparameter


@handle_errors
def tune(
    technique: Optional[str] = typer.Option(None, "--technique", help="sft | dpo | rlvr | rlaif"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Training data: file, folder, fsspec URL, "
                                          "hf://org/name/split?file=PATTERN, or a registered NAME or NAME@vN."),
    training_type: str = typer.Option("lora", "--training-type", help="lora (adapter) | full-rank (full model)."),
    model: Optional[str] = typer.Option(None, "--model", help="Catalog id, built-in, local model folder, "
                                        ".gguf file (converted once) or Hub id in the local cache [default: the catalog default, tuneloop/tiny-qwen3]."),
    project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT",
                                          help="Project the job and its state belong to [default: default]."),
    # here: the registry's hyperparameters that are not RL-only (see _SIGNATURE below)
    reward_function: Optional[str] = typer.Option(None, "--reward-function", help="RLVR reward: builtin:NAME, "
                                                  "file.py:FUNC, module:FUNC, http(s)://URL, grader JSON, or an "
                                                  "evaluator NAME[@vN]. A row's reward_model column may override it "
                                                  "with a builtin:, Builtin.* or registered evaluator reward."),
    reward_prompt: Optional[str] = typer.Option(None, "--reward-prompt", help="RLAIF reward prompt: Builtin.NAME "
                                                "(Helpfulness, Correctness, Harmlessness, Summarize, Conciseness), "
                                                "a template file, inline text, or an evaluator NAME[@vN]."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="RLAIF judge: catalog id, built-in, "
                                              "model folder, or openai:MODEL@BASE_URL [default: the base model]."),
    # here: the registry's RL hyperparameters
    skip_reward_validation: bool = typer.Option(False, "--skip-reward-validation",
                                                help="RL: do not run the rewards on sample rows before submitting."),
    allow_row_rewards: Optional[List[str]] = typer.Option(None, "--allow-row-rewards", help="RL: a reward (file, "
                                                          "module, URL, grader) rows' reward_model may name too; "
                                                          "repeat for more. Rows may always name builtin:, "
                                                          "Builtin.* and registered evaluators."),
    unsafe_reward_sandbox: bool = typer.Option(False, "--unsafe-reward-sandbox", help="RL: run reward code with "
                                               "process limits only, where no namespace sandbox is possible."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", help="MLflow tracking URI "
                                             "[default: $MLFLOW_TRACKING_URI; neither: tracking off]."),
    mlflow_experiment: Optional[str] = typer.Option(None, "--mlflow-experiment",
                                                    help="MLflow experiment [default: tuneloop-<project>]."),
    mlflow_run_name: Optional[str] = typer.Option(None, "--mlflow-run-name", help="MLflow run name [default: the job]."),
    column_map: Optional[str] = typer.Option(None, "--column-map", help='Rename columns: "input:prompt,output:completion" or "prompt=question"; drop one on purpose: "notes:".'),
    no_transform: bool = typer.Option(False, "--no-transform", help="Halt instead of flattening chat-format columns."),
    validation_dataset: Optional[str] = typer.Option(None, "--validation-dataset", help="Validation data (same format)."),
    validation_split: Optional[float] = typer.Option(None, "--validation-split", help="Hold out this share of the rows as validation data (deterministic, e.g. 0.1)."),
    take: Optional[int] = typer.Option(None, "--take", min=1, help="Use only the first N rows."),
    output_bucket: Optional[str] = typer.Option(None, "--output-bucket", help="Also copy the output here (folder or fsspec URL)."),
    force: bool = typer.Option(False, "--force", help="Start a new job even if one exists for this technique."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Submit and return without following the job."),
    status: bool = typer.Option(False, "--status", help="Show the tracked tune jobs and exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the spec and plan; create nothing."),
    list_models: bool = typer.Option(False, "--list-models", help="Print the supported model catalog and exit."),
    accept_eula: bool = typer.Option(False, "--accept-eula", help="Accept the licence of a gated model."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    **hyperparameters: Any,
) -> None:
    """Fine-tune a model: validate, stage, plan, train, register (idempotent per technique)."""
    if list_models:
        from tuneloop.cli.catalog import models

        return models(as_json=as_json)
    if status:
        from tuneloop.cli.jobs import tune_status

        return tune_status(project, as_json)
    if not technique or not dataset:
        missing = " and ".join(f for f, v in (("--technique", technique), ("--dataset", dataset)) if not v)
        raise ValidationError(f"{missing} required.",
                              hint="Example: tuneloop tune --technique sft --dataset train.jsonl\n"
                                   "See all options: tuneloop tune --help")
    from tuneloop.catalog import load_catalog
    from tuneloop.service.jobs import TuneRequest

    warning = load_catalog().staleness_warning()
    if warning:
        print(warning, file=sys.stderr)
    svc = service()
    req = TuneRequest(
        technique=technique, dataset=dataset, training_type=training_type, model=model, project=project,
        hyperparameters=hyperparameters,
        validation_dataset=validation_dataset, validation_split=validation_split, column_map=column_map,
        no_transform=no_transform, take=take,
        output_uri=output_bucket, reward_function=reward_function, reward_prompt=reward_prompt,
        accept_eula=accept_eula, judge_model=judge_model, skip_reward_validation=skip_reward_validation,
        allow_row_rewards=list(allow_row_rewards or []), unsafe_reward_sandbox=unsafe_reward_sandbox,
        mlflow_uri=mlflow_uri, mlflow_experiment=mlflow_experiment, mlflow_run_name=mlflow_run_name)
    prep = svc.prepare(req, dry_run=dry_run)
    for note in prep.notes:
        print(note, file=sys.stderr)
    outcome = svc.submit(prep, force=force, dry_run=dry_run)
    for note in outcome.notes[len(prep.notes):]:
        print(note, file=sys.stderr)
    if outcome.kind == "dry_run":
        return _render_dry_run(prep, as_json)
    if outcome.kind == "joined":      # a node > 0 of a job on several machines: node 0 owns the job
        if as_json:
            print_json({"outcome": "joined", "job": None})
        return
    job = outcome.job
    if not as_json:
        verb = {"submitted": "Submitted", "following": "Following the running", "completed": "Found the completed"}
        print(f"{verb[outcome.kind]} {job['technique']} job {job['id']}", file=sys.stderr)
    if outcome.kind != "completed" and not no_wait:
        from tuneloop.cli.follow import follow

        job = follow(svc, job["id"], quiet=as_json)
    if as_json:
        print_json({"outcome": outcome.kind, "job": public_job(job)})
        if job["state"] in ("failed", "cancelled"):
            raise typer.Exit(2)
        return
    if job["state"] in ("queued", "running"):
        print(f"Job {job['id']} is {job['state']}. Follow it: tuneloop status {job['id']}  |  "
              f"logs: tuneloop logs {job['id']} --follow")
        return
    from tuneloop.cli.follow import render_result

    render_result(svc, job)


def knob_help(hp: Hyperparameter) -> str:
    """A hyperparameter option's help: its registry name, where it applies, what it does."""
    return hp.name + (f" ({hp.scope})" if hp.scope else "") + f": {hp.help}"


def knob_options(rl: bool) -> list[inspect.Parameter]:
    """One typer option per registry hyperparameter (RL-only ones, or the others), in registry order."""
    return [inspect.Parameter(hp.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[hp.type],
                              default=typer.Option(None, hp.cli_flag, help=knob_help(hp)))
            for hp in HYPERPARAMETERS.values() if (hp.techniques == RL_TECHNIQUES) == rl]


def _signature(fn) -> inspect.Signature:
    """tune's own options with the registry's spliced in: general ones after --project, RL ones
    after --judge-model (typer reads this signature to build the command)."""
    params = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        if p.name == "project":
            params += knob_options(rl=False)
        elif p.name == "judge_model":
            params += knob_options(rl=True)
    return inspect.Signature(params, return_annotation=None)


tune.__signature__ = _signature(tune)


def _render_dry_run(prep, as_json: bool) -> None:
    plan = prep.plan.to_dict()
    if as_json:
        print_json({"outcome": "dry_run", "spec": prep.spec.to_dict(), "plan": plan,
                    "dataset": prep.staged.to_dict() | {"path": None}})
        return
    print("Dry run: nothing was created.\n\nJob spec:")
    print(prep.spec.to_json())
    print(f"\nDataset: {prep.staged.rows} rows, sha256 {prep.staged.sha256[:16]}")
    print("\nPlan:")
    p = prep.plan
    rows = p.summary_rows()
    for k, v in rows:
        print(f"  {k:<24}{v}")
    for n in p.notes:
        print(f"  note: {n}")
