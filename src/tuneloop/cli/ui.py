"""tuneloop ui [--host 127.0.0.1] [--port 8600] [--project P]: serve the guided web UI.

On localhost it asks nobody; on any other address it makes a token (or takes --token /
$TUNELOOP_UI_TOKEN) and prints the address that carries it once; project API keys are accepted too.
"""

from __future__ import annotations

import secrets
from typing import Optional

import typer

from tuneloop.cli.common import handle_errors, services


@handle_errors
def ui(host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface; "
                                "then a token or an API key is asked for)."),
       port: int = typer.Option(8600, "--port", help="Port to listen on."),
       project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT",
                                             help="Project the pages show [default: default]."),
       token: Optional[str] = typer.Option(None, "--token", envvar="TUNELOOP_UI_TOKEN",
                                           help="Require this token [default: a new one when not on localhost]."),
       api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TUNELOOP_API_KEY",
                                             help="Key for the project's tuneloop serve (the playground).")) -> None:
    """Serve the web UI: datasets, guided jobs with live curves, registry, playground."""
    import uvicorn

    from tuneloop.ui import create_ui
    from tuneloop.ui.auth import LOCAL_HOSTS

    if token is None and host not in LOCAL_HOSTS:
        token = secrets.token_urlsafe(24)
    hosts = None if token else LOCAL_HOSTS     # open on localhost: only requests addressed to it
    app = create_ui(services(), project=project, token=token, api_key=api_key, hosts=hosts)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"http://{shown if ':' not in shown else f'[{shown}]'}:{port}/"
    print(f"tuneloop ui on {address}" + (f"?token={token}" if token else ""), flush=True)
    if token:
        print("  Open that address once (it sets a cookie), or log in with a project API key "
              "(tuneloop keys create).", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
