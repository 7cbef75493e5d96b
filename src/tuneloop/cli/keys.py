"""tuneloop keys create|list|revoke: API keys of projects, for `tuneloop serve`'s /v1 routes.

    tuneloop keys create --project team-a      # prints sk-tl-... once; only its sha256 is kept
    tuneloop keys list [--project team-a] [--json]
    tuneloop keys revoke key_0123abcd

A key's requests belong to its project: its files, jobs and models; another project's key sees
none of them. Once any key exists the server refuses requests without one (401); the server's
--api-key keeps working as an admin key of the server's project.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from tuneloop.cli.common import console, handle_errors, print_json, services

app = typer.Typer(help="API keys per project for the server's /v1 routes: create, list, revoke.",
                  no_args_is_help=True)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "project", "redacted", "created_at", "last_used_at", "revoked_at")
    return {k: row.get(k) for k in keep}


def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if t else "-"


@app.command("create")
@handle_errors
def create(project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT",
                                                 help="The project the key's requests belong to [default: default]."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Make a new key of PROJECT and print it once (it cannot be shown again)."""
    from tuneloop.settings import resolve_project

    row, key = services().keys.create(resolve_project(project))
    if as_json:
        return print_json({**_public(row), "key": key})
    print(f"Created {row['id']} for project {row['project']}. The key (shown only now; store it safely):")
    print()
    print(f"  {key}")
    print()
    print('Use it: OpenAI(base_url="http://HOST:PORT/v1", api_key=KEY); revoke it: tuneloop keys revoke '
          f"{row['id']}")


@app.command("list")
@handle_errors
def list_(project: Optional[str] = typer.Option(None, "--project", help="Only this project's keys."),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Every key: id, project, created, last used, revoked (never the key itself)."""
    rows = services().keys.list(project)
    if as_json:
        return print_json([_public(r) for r in rows])
    if not rows:
        print("No API keys yet: the server is open unless it has --api-key. Make one: tuneloop keys create --project P")
        return
    from rich.table import Table

    table = Table(title="API keys", title_justify="left")
    for col in ("id", "project", "key", "created", "last used", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["id"], r["project"], r["redacted"], _when(r["created_at"]), _when(r["last_used_at"]),
                      _when(r["revoked_at"]))
    console().print(table)


@app.command("revoke")
@handle_errors
def revoke(key_id: str = typer.Argument(..., metavar="ID", help="The key's id, from `tuneloop keys list`."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Revoke a key: requests with it get 401 from now on (the server need not restart)."""
    row = services().keys.revoke(key_id)
    if as_json:
        return print_json(_public(row))
    print(f"Revoked {row['id']} (project {row['project']}) at {_when(row['revoked_at'])} UTC.")
