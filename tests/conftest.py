"""Shared fixtures. Every test gets its own TUNELOOP_HOME; built-in models are built once per
session into a shared TUNELOOP_MODELS_DIR. Nothing reaches the network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("TUNELOOP_PROJECT", None)
os.environ.pop("TUNELOOP_DATABASE_URL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)   # tracking is off unless a test turns it on
os.environ["TUNELOOP_ALLOW_URLS"] = "loopback"  # the tests' stand-in endpoints listen on 127.0.0.1

REPO = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO / "src" / "tuneloop" / "demo_data"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models")
    os.environ["TUNELOOP_MODELS_DIR"] = str(path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch, models_dir) -> Path:
    """A fresh TUNELOOP_HOME for this test (database, jobs), sharing the built-in models."""
    h = tmp_path / "home"
    monkeypatch.setenv("TUNELOOP_HOME", str(h))
    monkeypatch.setenv("TUNELOOP_MODELS_DIR", str(models_dir))
    return h


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """Run `tuneloop ARGS` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "tuneloop", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, input=input, cwd=REPO)


HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "mlflow", "matplotlib")


def heavy_imports(*argv: str, modules: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `modules` `tuneloop ARGV` imports (commands that do not train must stay light)."""
    code = ("import json, sys, runpy; sys.argv=['tuneloop', *sys.argv[2:]]\n"
            "try:\n    runpy.run_module('tuneloop', run_name='__main__')\nexcept SystemExit: pass\n"
            "print('HEAVY=' + json.dumps([m for m in sys.argv[1].split(',') if m in sys.modules]), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code, ",".join(modules), *argv], capture_output=True, text=True)
    line = next((l for l in r.stderr.splitlines() if l.startswith("HEAVY=")), None)
    assert line is not None, r.stderr
    return json.loads(line[6:])
