"""`tuneloop datasets ...` as a user types it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_DATA, cli, heavy_imports, write_jsonl


@pytest.mark.parametrize("argv", [["datasets", "--help"], ["datasets", "list"], ["datasets", "stage", "--help"]])
def test_datasets_paths_do_not_import_heavy_libraries(home, argv):
    assert heavy_imports(*argv) == []


def test_stage_reports_conversions_counts_and_token_lengths(home, tmp_path):
    rows = [{"prompt": "Explain AI", "chosen": {"role": "assistant", "content": "AI is..."},
             "rejected": {"role": "assistant", "content": ""}}] * 2
    src = write_jsonl(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "staged.jsonl"
    r = cli("datasets", "stage", "--technique", "dpo", "--dataset", str(src), "--output", str(out),
            "--model", "tuneloop/tiny-qwen3", "--max-seq-length", "12")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("ℹ️  Auto-converted column 'chosen' from chat-format to string\n"
                          "   Format: extracted content field") == 1
    assert "1 row(s) are exact duplicates" in r.stderr and "2 row(s) have an empty string" in r.stderr
    assert "rows          read 2, written 2" in r.stdout and "duplicates    1" in r.stdout
    assert "tokens        (tuneloop/tiny-qwen3, chat template)" in r.stdout and "2 row(s) longer than 12 tokens" in r.stdout
    assert json.loads(out.read_text().splitlines()[0]) == {"prompt": "Explain AI", "chosen": "AI is...", "rejected": ""}

    r = cli("datasets", "stage", "--technique", "dpo", "--dataset", str(src), "--output", str(out), "--json",
            "--model", "Qwen/Qwen3-0.6B")
    data = json.loads(r.stdout)
    assert (data["rows_read"], data["rows_written"], data["duplicates"], data["empty_fields"]) == (2, 2, 1, 2)
    assert data["lengths"]["available"] is False and "not in the local Hugging Face cache" in data["lengths"]["reason"]


def test_stage_errors_exit_1_and_write_nothing(home, tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", [{"q": "a", "a": "b"}])
    out = tmp_path / "staged.jsonl"
    r = cli("datasets", "stage", "--technique", "sft", "--dataset", str(src), "--output", str(out))
    assert r.returncode == 1 and not out.exists() and "Traceback" not in r.stderr
    assert f'tuneloop datasets stage --technique sft --output {out} --dataset {src} --column-map "q:prompt,a:completion"' in r.stderr
    rows = [{"prompt": "p", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "r"}]
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    r = cli("datasets", "stage", "--technique", "dpo", "--dataset", str(src), "--output", str(out), "--no-transform")
    assert r.returncode == 1 and not out.exists()
    assert ("❌ Column 'chosen' contains chat-format data (detected: single_element_list) but --no-transform is "
            "active.") in r.stderr
    assert f"Remove --no-transform to enable automatic conversion:\n  tuneloop datasets stage --technique dpo " \
           f"--output {out} --dataset {src}" in r.stderr


def test_create_list_show_versions_split_delete(home, tmp_path):
    r = cli("datasets", "create", "capitals", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--technique", "sft")
    assert r.returncode == 0 and "Created capitals@v1 (16 rows, sft" in r.stdout, r.stderr
    r = cli("datasets", "create", "capitals", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--technique", "sft")
    assert "Unchanged: identical content is already capitals@v1" in r.stdout
    cli("datasets", "create", "capitals", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--technique", "sft", "--take", "8")
    assert [v["ref"] for v in json.loads(cli("datasets", "versions", "capitals", "--json").stdout)] == \
        ["capitals@v1", "capitals@v2"]
    listed = json.loads(cli("datasets", "list", "--json").stdout)
    assert [(d["ref"], d["versions"]) for d in listed] == [("capitals@v2", 2)]
    r = cli("datasets", "show", "capitals@v1")
    assert "capitals@v1  (sft, 16 rows, format prompt_completion)" in r.stdout and "columns     prompt, completion" in r.stdout
    assert "chars       completion:" in r.stdout and "row 1      " in r.stdout
    split = json.loads(cli("datasets", "split", "capitals@v1", "--ratio", "0.75", "--seed", "1", "--json").stdout)
    assert (split["train"]["rows"], split["validation"]["rows"]) == (12, 4)
    assert split["train"]["ref"] == "capitals-train@v1"
    again = json.loads(cli("datasets", "split", "capitals@v1", "--ratio", "0.75", "--seed", "1", "--json").stdout)
    assert again["validation"]["sha256"] == split["validation"]["sha256"]
    r = cli("tune", "--technique", "sft", "--dataset", "capitals-train", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dataset"]["dataset_version"] == "capitals-train@v1"
    assert cli("datasets", "delete", "capitals@v2").stdout.strip() == "Deleted capitals@v2"
    r = cli("datasets", "show", "capitals@v2")
    assert r.returncode == 1 and "No registered dataset 'capitals@v2'" in r.stderr
