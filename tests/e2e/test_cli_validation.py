"""The CLI as a user types it: bad input exits 1 with a message naming the file, line and fix,
and creates no job; paths that do not train never import torch."""

import json

import pytest

from tests.conftest import DEMO_DATA, cli, heavy_imports, write_jsonl


def _no_jobs(home):
    r = cli("status", "--json", env={"TUNELOOP_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


@pytest.mark.parametrize("argv", [["--help"], ["tune", "--status"], ["tune", "--help"], ["config", "--json"],
                                  ["models", "--json"], ["status"], ["registry", "list"],
                                  ["eval", "--help"], ["metrics", "--help"]])
def test_paths_that_do_not_train_do_not_import_torch(home, argv):
    assert heavy_imports(*argv) == []


def test_list_models(home):
    r = cli("tune", "--list-models", "--json")
    ids = [m["id"] for m in json.loads(r.stdout)]
    assert "Qwen/Qwen3-0.6B" in ids and "tuneloop/tiny-qwen3" in ids and len(ids) == 29
    assert "tuneloop/tiny-qwen3" in cli("models").stdout


def test_unknown_model(home, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}])
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", "my-custom-model-7b")
    assert r.returncode == 1
    assert '❌ Model "my-custom-model-7b" is not yet supported for managed customization.' in r.stderr
    assert "Supported model families:" in r.stderr and "• Meta Llama 3.1 / 3.2 / 3.3" in r.stderr
    _no_jobs(home)


def test_technique_not_offered_by_model(home, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    r = cli("tune", "--technique", "dpo", "--dataset", str(data), "--model", "Qwen/Qwen3.5-4B")
    assert r.returncode == 1 and 'Technique "dpo" is not supported for model "Qwen/Qwen3.5-4B"' in r.stderr
    _no_jobs(home)


def test_gated_model_needs_eula(home, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}])
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", "meta-llama/Llama-3.2-1B-Instruct")
    assert r.returncode == 1 and "--accept-eula" in r.stderr


@pytest.mark.parametrize("content, expected", [
    (None, "Dataset file not found"),
    ("", "has no records"),
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a" "completion": "b"}\n', ":2: column 16: invalid JSON"),
    ('{"question": "a", "answer": "b"}\n', '--column-map "question:prompt,answer:completion"'),
])
def test_bad_datasets_exit_1_with_no_job(home, tmp_path, content, expected):
    path = tmp_path / "train.jsonl"
    if content is not None:
        path.write_text(content)
    r = cli("tune", "--technique", "sft", "--dataset", str(path))
    assert r.returncode == 1, r.stderr
    assert expected in r.stderr and "Traceback" not in r.stderr
    _no_jobs(home)
    assert not list((home / "staging").glob("*")) if (home / "staging").exists() else True


def test_missing_flags_and_bad_values(home):
    r = cli("tune", "--technique", "sft")
    assert r.returncode == 1 and "--dataset required" in r.stderr
    r = cli("tune", "--technique", "ppo", "--dataset", str(DEMO_DATA / "sft.jsonl"))
    assert r.returncode == 1 and 'Unknown technique "ppo"' in r.stderr
    r = cli("tune", "--technique", "sft", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--training-type", "full-rank",
            "--lora-rank", "8")
    assert r.returncode == 1 and "--lora-rank only applies when --training-type lora" in r.stderr
    _no_jobs(home)


def test_dry_run_prints_spec_and_plan_and_creates_nothing(home):
    r = cli("tune", "--technique", "sft", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["spec"]["model"] == "tuneloop/tiny-qwen3" and out["plan"]["precision"] == "fp32"
    assert out["plan"]["total_steps"] > 0 and out["plan"]["est_peak_memory_gb"] > 0
    r = cli("tune", "--technique", "sft", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--dry-run")
    assert "Dry run: nothing was created." in r.stdout and "gradient checkpointing" in r.stdout
    _no_jobs(home)
