"""tuneloop evaluators create|list|show|versions|verify: reward functions and reward prompts as
named, versioned assets, and checking any reward on sample rows before training.

    tuneloop evaluators create colour-match --type reward-function --source rewards.py:score
    tuneloop evaluators create helpful --type reward-prompt --source Builtin.Helpfulness
    tuneloop evaluators verify colour-match --dataset data/train.jsonl --samples 8
    tuneloop evaluators verify builtin:numeric_match --dataset data/train.jsonl
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional

import typer

from tuneloop.cli.common import console, handle_errors, print_json, services

app = typer.Typer(help="Reward functions and reward prompts: register, version, verify.", no_args_is_help=True)


def _service():
    return services().evaluators


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("ref", "name", "version", "type", "kind", "source", "target", "sha256", "created_at")
    return {k: row.get(k) for k in keep}


@app.command("create")
@handle_errors
def create(name: str = typer.Argument(..., help="Evaluator name (letters, digits, '-', '_')."),
           source: str = typer.Option(..., "--source", help="file.py:FUNC, module:FUNC, http(s)://URL, builtin:NAME, "
                                      "grader JSON (inline or file), Builtin.NAME, a prompt file or prompt text."),
           type: Optional[str] = typer.Option(None, "--type", help="reward-function | reward-prompt "
                                              "[default: from the source]"),
           description: Optional[str] = typer.Option(None, "--description"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Register a reward as the next version of NAME (the same content returns the existing version)."""
    row, added = _service().create(name, source, type=type, description=description)
    if as_json:
        return print_json({"added": added, **_public(row)})
    verb = "Created" if added else "Unchanged:"
    print(f"{verb} {row['ref']} ({row['type']}, {row['kind']}) -> {row['target']}")
    print(f"Use it: tuneloop tune --technique {'rlaif --reward-prompt' if row['type'] == 'reward-prompt' else 'rlvr --reward-function'} "
          f"{row['ref']} --dataset FILE")


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every evaluator, at its latest version."""
    rows = _service().list()
    if as_json:
        return print_json([_public(r) for r in rows])
    if not rows:
        print("No evaluators yet. Create one: tuneloop evaluators create NAME --type reward-function --source FILE.py:FUNC")
        return
    from rich.table import Table

    table = Table(title="Evaluators", title_justify="left")
    for col in ("name", "latest", "type", "kind", "source", "created"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], f"v{r['version']}", r["type"], r["kind"], r["source"][:60],
                      r["created_at"].strftime("%Y-%m-%d %H:%M"))
    console().print(table)


@app.command("show")
@handle_errors
def show(ref: str = typer.Argument(..., help="NAME (latest version) or NAME@vN."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One evaluator version, with its frozen content."""
    svc = _service()
    row = svc.get(ref)
    content = svc.content(row)
    if as_json:
        return print_json(_public(row) | {"content": content})
    for k, v in _public(row).items():
        print(f"{k:<12}{v}")
    if content is not None:
        print("\n" + content.rstrip())


@app.command("versions")
@handle_errors
def versions(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version of NAME."""
    rows = _service().versions(name)
    if as_json:
        return print_json([_public(r) for r in rows])
    for r in rows:
        print(f"{r['ref']:<32}{r['kind']:<9}{r['sha256'][:12]}  {r['created_at']:%Y-%m-%d %H:%M}  {r['source']}")


@app.command("verify")
@handle_errors
def verify(ref: str = typer.Argument(..., help="An evaluator NAME[@vN] or any reward reference."),
           dataset: str = typer.Option(..., "--dataset", help="RL rows (prompt messages + the columns the reward reads)."),
           samples: int = typer.Option(8, "--samples", min=1, help="Rows to run the reward on."),
           judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Judge for reward prompts."),
           completion: Optional[List[str]] = typer.Option(None, "--completion",
                                                          help="Completion(s) to score [default: each row's "
                                                               "reference answer]."),
           column_map: Optional[str] = typer.Option(None, "--column-map"),
           timeout: float = typer.Option(10.0, "--timeout", help="Seconds one reward call may take."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Run a reward on sample rows and print scores and errors (exit 1 when any call fails)."""
    out = _service().verify(ref, dataset, samples=samples, judge_model=judge_model, completions=completion or None,
                            column_map=column_map, timeout_s=timeout)
    if as_json:
        print_json(out.to_dict())
    else:
        for rep in out.reports:
            print(f"{rep.name}  ({out.technique}, {out.rows} row(s))")
            if rep.note:
                print(f"  note: {rep.note}")
            for r in rep.results:
                text = r.completion if len(r.completion) <= 40 else r.completion[:37] + "..."
                if r.score.error:
                    print(f"  row {r.row + 1:<4} {r.label:<22} {text!r:<44} ❌ [{r.score.error.kind}] "
                          f"{r.score.error.message}")
                else:
                    metrics = ", ".join(f"{k}={v:.3g}" for k, v in r.score.metrics.items())
                    value = "-" if r.score.value is None else f"{r.score.value:.4g}"
                    print(f"  row {r.row + 1:<4} {r.label:<22} {text!r:<44} score {value}"
                          + (f"  ({metrics})" if metrics else ""))
            first = next((r for r in rep.failures if r.score.error.traceback), None)
            if first is not None:
                print("\n  " + first.score.error.traceback.strip().replace("\n", "\n  "), file=sys.stderr)
        print("✅ every call returned a score" if out.ok else "❌ the reward failed on sample rows",
              file=sys.stderr if not out.ok else sys.stdout)
    if not out.ok:
        raise typer.Exit(1)
