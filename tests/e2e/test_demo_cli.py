"""`tuneloop demo --model REF`: the demo's jobs, evaluations and server run on the model given."""

from __future__ import annotations

import pytest

from tests.conftest import cli


def test_dry_run_plans_every_demo_job_on_the_model_given(home):
    r = cli("demo", "--dry-run", "--model", "tuneloop/tiny-qwen3")
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())   # rich wraps long lines
    for job in ("SFT: model tuneloop/tiny-qwen3, 16 rows", "DPO: model tuneloop/tiny-qwen3, 24 rows",
                "RLVR warm start (SFT): model tuneloop/tiny-qwen3, 8 rows", "RLVR: model tuneloop/tiny-qwen3, 128 rows"):
        assert job in out, out
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())   # nothing was created


def test_an_unknown_model_is_the_resolvers_error_before_anything_runs(home, tmp_path):
    r = cli("demo", "--model", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1
    assert "missing.gguf" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


def test_the_real_run_passes_the_model_to_every_job(home, monkeypatch, models_dir):
    """In process, the model's loading and answers stubbed out: the demo evaluates the model it was
    given and the first job it submits asks for it (a folder here, as `--model ./my-model` gives)."""
    from rich.console import Console

    from tuneloop.cli import demo
    from tuneloop.cli.common import service
    from tuneloop.errors import TuneloopError
    from tuneloop.evaluation import quick
    from tuneloop.models.builtin import ensure_builtin

    folder = ensure_builtin("tuneloop/tiny-qwen3", models_dir)   # passed as a plain model folder
    svc = service()
    asked, loaded = [], []

    class Stop(TuneloopError):
        pass

    def prepare(req, **kwargs):
        asked.append(req)
        raise Stop("stop after the first request")

    def load_for_eval(base, adapter=None):
        loaded.append(base)
        return None, None

    monkeypatch.setattr(svc, "prepare", prepare)
    monkeypatch.setattr(quick, "load_for_eval", load_for_eval)
    monkeypatch.setattr(quick, "generate", lambda model, tok, prompts, **kw: [""] * len(prompts))
    monkeypatch.setattr(quick, "preference_accuracy", lambda model, tok, rows: (0.0, []))
    with pytest.raises(Stop):
        demo._demo(Console(quiet=True), svc, model=str(folder))
    assert loaded == [str(folder)]
    assert [(r.technique, r.model, r.project) for r in asked] == [("sft", str(folder), "demo")]


@pytest.mark.slow
def test_dry_run_on_the_real_gguf_model(home, real_gguf):
    r = cli("demo", "--dry-run", "--model", str(real_gguf))
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert out.count(f"model {real_gguf}") == 4, out
