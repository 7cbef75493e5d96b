"""The planner through the CLI: `.venv/bin/python -m pytest tests/e2e/test_plan_cli.py -q`."""

import json

from tests.conftest import cli, write_jsonl

ROWS = [{"prompt": "hi", "completion": "there"}, {"prompt": "a", "completion": "b"}]


def test_a_model_too_large_for_the_machine_is_refused_before_any_job(home, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    env = {"HF_HOME": str(tmp_path / "hf")}      # not cached here: the dry run plans from the catalog's size
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", "Qwen/Qwen2.5-72B-Instruct",
            "--dry-run", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "needs about" in out and "72.70B-parameter" in out and "usable for training" in out, out
    assert "a smaller model" in out and "more RAM" in out and "--training-type lora" not in out
    assert json.loads(cli("status", "--json").stdout) == []
