"""Alpaca files and unread text columns through `tuneloop datasets stage`, as a user types it."""

from __future__ import annotations

import json

from tests.conftest import cli, write_jsonl


def test_alpaca_stages_with_the_instruction_and_an_unread_text_column_needs_an_explicit_drop(home, tmp_path):
    rows = [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour",
             "notes": "checked by a native speaker"}]
    src, out = write_jsonl(tmp_path / "alpaca.jsonl", rows), tmp_path / "staged.jsonl"
    r = cli("datasets", "stage", "--technique", "sft", "--dataset", str(src), "--output", str(out))
    assert r.returncode == 1 and not out.exists() and "Traceback" not in r.stderr
    assert "column 'notes' holds text that the Alpaca (instruction/input/output) format does not read" in r.stderr
    assert f"{src}:1: column 'notes'" in r.stderr
    assert f'tuneloop datasets stage --technique sft --output {out} --dataset {src} --column-map "notes:"' in r.stderr
    r = cli("datasets", "stage", "--technique", "sft", "--dataset", str(src), "--output", str(out),
            "--column-map", "notes:")
    assert r.returncode == 0, r.stderr
    assert "Detected Alpaca format" in r.stderr
    assert json.loads(out.read_text()) == {"prompt": "Translate to French.\n\nGood morning", "completion": "Bonjour"}
