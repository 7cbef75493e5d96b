"""tuneloop eval --model REF --dataset SRC [--technique T] [--evaluator REF ...] [--judge REF]
[--compare-base] [--output DIR] [--no-wait] [--json]: evaluate a model as a tracked job (status, logs,
cancel) that writes results.json, report.md and metrics.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tuneloop.cli.common import console, handle_errors, print_json, public_job, services
from tuneloop.cli.follow import follow
from tuneloop.errors import JobFailedError


@handle_errors
def eval_(model: str = typer.Option(..., "--model", help="A job (name, or a technique for its latest), GROUP@vN, "
                                    "an adapter or model folder, or a catalog / built-in model."),
          dataset: str = typer.Option(..., "--dataset", help="Evaluation data (any source `tune` takes)."),
          technique: Optional[str] = typer.Option(None, "--technique", help="sft | dpo | rlvr [default: from the "
                                                  "data]"),
          evaluator: Optional[List[str]] = typer.Option(None, "--evaluator", help="Reward function, grader, "
                                                        "evaluator NAME[@vN] or reward prompt (Builtin.Correctness, "
                                                        "...); repeatable."),
          judge: Optional[str] = typer.Option(None, "--judge", help="Judge for reward prompts and the pairwise win "
                                              "rate: a model or openai:MODEL@BASE_URL."),
          compare_base: bool = typer.Option(False, "--compare-base", help="Evaluate the base model too (and, with "
                                            "--judge, compare answers pairwise)."),
          output: Optional[str] = typer.Option(None, "--output", help="Folder for results.json, report.md, "
                                               "metrics.png [default: TUNELOOP_HOME/projects/P/evals/eval-TIME]."),
          samples: Optional[int] = typer.Option(None, "--samples", min=1, help="Evaluate the first N rows."),
          max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Tokens per generated answer."),
          beta: float = typer.Option(0.1, "--beta", help="DPO beta for the implicit reward margin."),
          column_map: Optional[str] = typer.Option(None, "--column-map"),
          project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
          no_wait: bool = typer.Option(False, "--no-wait", help="Submit the evaluation job and return."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Evaluate a model: SFT loss, perplexity, token accuracy and exact match; DPO preference
    accuracy and margins; mean reward under evaluators; judge scores and win rate against the base."""
    from tuneloop.evaluation.run import EvalRequest  # staging and rewards: not on the CLI's light paths

    req = EvalRequest(model=model, dataset=dataset, technique=technique, evaluators=list(evaluator or []),
                      judge=judge, compare_base=compare_base,
                      output=str(Path(output).resolve()) if output else None, samples=samples,
                      max_new_tokens=max_new_tokens, beta=beta, project=project, column_map=column_map)
    svc = services()
    job = svc.evaluations.submit(req)
    print(f"Submitted evaluation job {job['id']} ({job['dataset_rows']} {job['training_type']} rows)", file=sys.stderr)
    if no_wait:
        if as_json:
            return print_json(public_job(job))
        print(f"Follow it: tuneloop logs {job['id']} --follow   |   tuneloop status {job['id']}")
        return
    job = follow(svc.jobs, job["id"], quiet=as_json)
    if job["state"] != "completed":
        raise JobFailedError(f"Evaluation job {job['id']} {job['state']}: {job['error'] or 'no reason recorded'}",
                             details=[f"Logs: tuneloop logs {job['id']}"])
    result = json.loads((Path(job["output_path"]) / "results.json").read_text())
    result["output"], result["job"] = job["output_path"], job["id"]
    if as_json:
        return print_json(result)
    from rich.table import Table

    table = Table(title=f"{result['model_ref']}: {result['technique']} evaluation on {result['rows']} rows",
                  title_justify="left")
    base = result.get("base") or {}
    for col in ("metric", "model") + (("base",) if base else ()):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for k, v in result["model"].items():
        row = [k, f"{v:.4g}"] + ([f"{base[k]:.4g}" if k in base else ""] if base else [])
        table.add_row(*row)
    console().print(table)
    print(f"Report: {result['output']}/report.md (results.json, metrics.png beside it)")
