"""tuneloop serve: the OpenAI-compatible server; tuneloop test: ask it, beside the base model.

    tuneloop serve [--model BASE] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--workers N]
    tuneloop test --model tuned-sft --prompt "What is the capital of France?"
    tuneloop test --model tuned-sft --dataset train.jsonl --samples 5
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tuneloop.cli.common import console, handle_errors, print_json
from tuneloop.cli.deploy import API_KEY, PROJECT, deployments
from tuneloop.data.staged import read_rows
from tuneloop.errors import ValidationError


@handle_errors
def serve(model: Optional[str] = typer.Option(None, "--model", help="Base model: catalog id, built-in, folder, "
                                              ".gguf file or Hub id in the local cache (default: the deployed base, else tuneloop/tiny-qwen3)."),
          host: str = typer.Option("127.0.0.1", "--host"),
          port: int = typer.Option(8000, "--port", min=1, max=65535),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TUNELOOP_API_KEY",
                                                help="Require `Authorization: Bearer KEY` on /v1 routes."),
          engine: str = typer.Option("auto", "--engine", help="auto | transformers | vllm (auto: vLLM when it and "
                                     "a GPU are present)."),
          max_batch: int = typer.Option(32, "--max-batch", min=1, help="Rows generated together at most."),
          batch_window_ms: float = typer.Option(10.0, "--batch-window-ms", min=0.0,
                                                help="An idle server waits this long for requests to batch together."),
          max_tokens: int = typer.Option(256, "--default-max-tokens", min=1,
                                         help="max_tokens of requests that do not set it."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                                help="CPU threads for torch (default: torch's choice)."),
          max_request_bytes: int = typer.Option(8 * 1024 * 1024, "--max-request-bytes", min=1024,
                                                envvar="TUNELOOP_MAX_REQUEST_BYTES",
                                                help="Larger request bodies are refused with 413 (default 8 MiB)."),
          max_request_tokens: Optional[int] = typer.Option(
              None, "--max-request-tokens", min=1, envvar="TUNELOOP_MAX_REQUEST_TOKENS",
              help="Tokens one request may ask to generate, prompts x n x max_tokens (default: 64 x the context)."),
          model_roots: Optional[list[str]] = typer.Option(
              None, "--model-root", help="Also load lora_path / model_path of requests from under this folder "
              "(repeatable; env TUNELOOP_MODEL_ROOTS, os.pathsep-separated). Always: TUNELOOP_HOME, the models dir."),
          allow_remote_weights: bool = typer.Option(
              False, "--allow-remote-weights", help="Let requests name URLs (https://, s3://, hf://) as lora_path / "
              "model_path (env TUNELOOP_ALLOW_REMOTE_WEIGHTS=1); http(s) hosts must pass the URL guard."),
          workers: int = typer.Option(1, "--workers", min=0, max=64,
                                      help="Fine-tuning jobs created through the API that train at once (each in "
                                      "its own runner process); 0: this server only queues them."),
          project: Optional[str] = PROJECT) -> None:
    """Serve the base model, its adapters and inference components (OpenAI-compatible), and the
    OpenAI fine-tuning API (files, jobs, events, checkpoints, graders) on the same port."""
    from tuneloop.api.mount import api_extensions   # starlette, FastAPI: not on the CLI's light paths
    from tuneloop.service.app import open_services
    from tuneloop.serving.limits import Limits

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    services = open_services()
    extensions = api_extensions(services, workers)
    extensions.mounts.append(("/ui", _ui(services, host, project, api_key, say)))
    extensions.streamed += ("/ui/datasets",)     # the UI bounds its uploads itself (TUNELOOP_MAX_UPLOAD_BYTES)
    raise typer.Exit(deployments(project).serve(
        model=model, host=host, port=port, api_key=api_key, engine_kind=engine, max_batch=max_batch,
        batch_window_ms=batch_window_ms, default_max_tokens=max_tokens, threads=threads,
        limits=Limits(max_request_bytes, max_request_tokens), model_roots=tuple(model_roots or ()),
        allow_remote_weights=allow_remote_weights, extensions=extensions, say=say))


def _ui(services, host: str, project: str | None, api_key: str | None, say):
    """The web UI under /ui of this server: open on localhost (to requests addressed to it); beyond
    it a token printed here, and the project API keys, let a viewer in."""
    import secrets

    from tuneloop.ui import create_ui
    from tuneloop.ui.auth import LOCAL_HOSTS

    token = None if host in LOCAL_HOSTS else secrets.token_urlsafe(24)
    if token:
        say(f"Web UI: /ui/?token={token} (opened once it sets a cookie; project API keys work too)")
    return create_ui(services, project=project, token=token, api_key=api_key,
                     hosts=None if token else LOCAL_HOSTS)


def read_prompts(path: str, samples: int) -> list[tuple[str, str | None]]:
    """(prompt, expected answer or None) from JSONL: prompt/completion, input/output, messages."""
    rows: list[tuple[str, str | None]] = []
    try:
        records = read_rows(Path(path).expanduser(), samples)
    except OSError as e:
        raise ValidationError(f"Cannot read {path}: {e.strerror}.", param="dataset") from None
    for n, row in enumerate(records, 1):
        if "messages" in row:
            msgs = row["messages"]
            users = [m["content"] for m in msgs if m.get("role") == "user"]
            answers = [m["content"] for m in msgs if m.get("role") == "assistant"]
            prompt, expected = (users[-1] if users else None), (answers[-1] if answers else None)
        else:
            prompt = row.get("prompt", row.get("input"))
            expected = row.get("completion", row.get("output"))
        if isinstance(prompt, list):  # RL prompts: [{"role", "content"}]
            prompt = next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), None)
        if not isinstance(prompt, str):
            raise ValidationError(f"{path}: row {n} has no prompt (prompt, input or messages).", param="dataset")
        rows.append((prompt, expected if isinstance(expected, str) else None))
    if not rows:
        raise ValidationError(f"{path} has no rows.", param="dataset")
    return rows


def _one_line(text: str, width: int = 60) -> str:
    """An answer on one table line: newlines shown as ⏎, long answers cut."""
    flat = text.strip().replace("\n", "⏎")
    if not flat:
        return "(empty)" if not text else f"({len(text)} whitespace characters)"
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@handle_errors
def test(model: Optional[str] = typer.Option(None, "--model", help="Served name (default: the latest adapter or "
                                             "inference component)."),
         prompt: Optional[str] = typer.Option(None, "--prompt", help="One question."),
         dataset: Optional[str] = typer.Option(None, "--dataset", help="JSONL with prompt (and completion) rows."),
         samples: int = typer.Option(5, "--samples", min=1, help="Rows of --dataset to ask."),
         max_tokens: int = typer.Option(64, "--max-tokens", min=1),
         project: Optional[str] = PROJECT, api_key: Optional[str] = API_KEY,
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Ask the running endpoint and print its answers beside the base model's (greedy)."""
    if bool(prompt) == bool(dataset):
        raise ValidationError("Pass --prompt TEXT or --dataset FILE.", param="prompt",
                              hint='Example: tuneloop test --model tuned-sft --prompt "What is the capital of France?"')
    deps = deployments(project, api_key)
    server = deps.require_server()
    served = deps.served_models(server)
    base = next(m["id"] for m in served if m.get("parent") is None and m.get("kind", "base") == "base")
    if model is None:
        others = [m["id"] for m in served if m["id"] != base]
        model = others[-1] if others else base
    rows = [(prompt, None)] if prompt else read_prompts(dataset, samples)
    questions = [p for p, _ in rows]
    answers = deps.ask(server, model, questions, max_tokens)
    base_answers = deps.ask(server, base, questions, max_tokens) if model != base else answers
    results = [{"prompt": p, "expected": e, base: b, model: a} for (p, e), a, b in zip(rows, answers, base_answers)]
    if as_json:
        return print_json(results)
    table = Table(title=f"{model} vs {base} at {server.url}", title_justify="left")
    columns = ["prompt"] + (["expected"] if any(e for _, e in rows) else []) + [base] + ([model] if model != base else [])
    for col in columns:
        table.add_column(col, overflow="fold")
    for (p, e), a, b in zip(rows, answers, base_answers):
        mark = "" if e is None else ("✅ " if a.strip() == e.strip() else "❌ ")
        cells = [p] + ([e or ""] if "expected" in columns else []) + [_one_line(b)] + \
            ([mark + _one_line(a)] if model != base else [])
        table.add_row(*cells)
    console().print(table)
    expected = [(a, e) for (_, e), a in zip(rows, answers) if e is not None]
    if expected:
        hits = sum(a.strip() == e.strip() for a, e in expected)
        print(f"{model}: {hits}/{len(expected)} answers equal the expected completion.")
