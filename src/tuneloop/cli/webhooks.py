"""tuneloop webhooks add|list|remove: where a project's fine-tuning jobs' ends are posted.

    tuneloop webhooks add --project team-a --url https://ci.example.com/hook   # prints whsec_... once
    tuneloop webhooks list [--project team-a] [--json]
    tuneloop webhooks remove wh_0123abcd

`tuneloop serve` posts `fine_tuning.job.succeeded|failed|cancelled` events there, signed as
OpenAI's are (verify with the openai client's `client.webhooks.unwrap(body, headers,
secret=...)`), retried after 1, 2, 4, 8 and 16 s. A loopback or private URL is refused unless
TUNELOOP_ALLOW_URLS allows it (e.g. `loopback`), where the server runs and here.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from tuneloop.cli.common import console, handle_errors, print_json, services

app = typer.Typer(help="Webhooks per project: fine-tuning jobs' ends posted, signed: add, list, remove.",
                  no_args_is_help=True)


def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "-"


@app.command("add")
@handle_errors
def add(url: str = typer.Option(..., "--url", help="Where to POST the events (http or https)."),
        project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT",
                                              help="The project whose jobs are posted [default: default]."),
        as_json: bool = typer.Option(False, "--json")) -> None:
    """Post PROJECT's fine-tuning jobs' ends to URL from now on; prints the signing secret once."""
    from tuneloop.settings import resolve_project

    row = services().webhooks.create(resolve_project(project), url)
    if as_json:
        return print_json(row)
    print(f"Added {row['id']} for project {row['project']}: {row['url']}. Its signing secret (shown only now):")
    print()
    print(f"  {row['secret']}")
    print()
    print("Verify a post: openai.OpenAI().webhooks.unwrap(body, headers, secret=SECRET)")


@app.command("list")
@handle_errors
def list_(project: Optional[str] = typer.Option(None, "--project", help="Only this project's webhooks."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Every webhook: id, project, URL, posts delivered, pending and given up, the last error."""
    rows: list[dict[str, Any]] = services().webhooks.list(project)
    if as_json:
        return print_json(rows)
    if not rows:
        print("No webhooks yet. Add one: tuneloop webhooks add --project P --url URL")
        return
    from rich.table import Table

    table = Table(title="Webhooks", title_justify="left")
    for col in ("id", "project", "url", "created", "delivered", "pending", "given up", "last error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["project"], r["url"], _when(r["created_at"]), str(r["delivered"]),
                      str(r["pending"]), str(r["given_up"]), r["last_error"] or "-")
    console().print(table)


@app.command("remove")
@handle_errors
def remove(webhook_id: str = typer.Argument(..., metavar="ID", help="The webhook's id, from `tuneloop webhooks list`.")
           ) -> None:
    """Stop posting to a webhook (its pending posts are dropped)."""
    services().webhooks.remove(webhook_id)
    print(f"Removed {webhook_id}.")
