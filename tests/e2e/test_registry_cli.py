"""`tuneloop registry list` shows each version's exports (the model_artifacts that `tuneloop export`
records), in the table and in --json: `.venv/bin/python -m pytest tests/e2e/test_registry_cli.py -q`."""

from __future__ import annotations

import json

from tests.conftest import cli


def _register_with_exports(tmp_path) -> None:
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    store = open_store(load_settings().database_url)
    for i in (1, 2):
        store.insert_job(dict(id=f"default-tune-sft-{i}", project="default", technique="sft", training_type="lora",
                              model="tuneloop/tiny-qwen3", dataset="d.jsonl", spec={}, plan={}, job_dir=str(tmp_path)))
        store.update_job(f"default-tune-sft-{i}", state="completed", active_key=None, output_type="adapter",
                         output_path=str(tmp_path / f"out{i}"))
        store.register_package("default-tune-models", "default", dict(
            job_id=f"default-tune-sft-{i}", technique="sft", training_type="lora", base_model="tuneloop/tiny-qwen3",
            dataset="d.jsonl", dataset_sha256="0" * 64, output_path=str(tmp_path / f"out{i}"),
            output_type="adapter", metrics={}))
    store.add_artifact("default-tune-models", 1, dict(format="gguf", quant="q8_0", path=str(tmp_path / "gguf"),
                                                      files=["m.q8_0.gguf"], verify={"passed": True}))
    store.add_artifact("default-tune-models", 1, dict(format="merged", quant=None, path=str(tmp_path / "merged"),
                                                      files=["model.safetensors"], verify=None))


def test_registry_list_shows_each_versions_exports(home, tmp_path):
    _register_with_exports(tmp_path)
    r = cli("registry", "list", "--json")
    assert r.returncode == 0, r.stderr
    v1, v2 = sorted(json.loads(r.stdout), key=lambda p: p["version"])
    assert [(a["format"], a["quant"], a["path"], a["files"]) for a in v1["artifacts"]] == [
        ("gguf", "q8_0", str(tmp_path / "gguf"), ["m.q8_0.gguf"]),
        ("merged", None, str(tmp_path / "merged"), ["model.safetensors"])]
    assert v1["artifacts"][0]["verify"] == {"passed": True} and v2["artifacts"] == []

    table = cli("registry", "list")
    assert table.returncode == 0, table.stderr
    assert "exports" in table.stdout.splitlines()[2]
    # the last column's cells, joined (rich wraps the long paths at any width)
    cells = "".join(line.split("│")[-2].strip() for line in table.stdout.splitlines() if line.count("│") > 2)
    assert cells.replace(" ", "") == f"gguf q8_0: {tmp_path / 'gguf'} (verified)merged: {tmp_path / 'merged'}-" \
        .replace(" ", "")   # v1's two exports, then v2's none
