"""Sources: folders and fsspec URLs with split layouts, ?file= selection, schema divergence,
registered datasets."""

from __future__ import annotations

import json

import fsspec
import pytest

from tuneloop.data.sources import file_split, resolve, suggest_pattern, DataFile
from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError

PC = {"prompt": "Q", "completion": "A"}
PREF = {"prompt": "Q", "chosen": "good", "rejected": "bad"}


def put(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage(src, technique, tmp_path, **kw):
    return stage_dataset(str(src), technique, tmp_path / "out.jsonl", lookup=None, **kw)


@pytest.mark.parametrize("name, split", [
    ("data/train-00000-of-00002.parquet", "train"), ("train.jsonl", "train"), ("test/part-0.csv", "test"),
    ("validation.jsonl.zst", "validation"), ("dev.json", "validation"), ("call_train_00000.parquet", "train"),
    ("trainer_notes.jsonl", None), ("data.jsonl", None),
])
def test_split_from_file_layout(name, split):
    assert file_split(name) == split


def test_folder_reads_the_train_split_by_default_and_a_named_split(tmp_path):
    d = tmp_path / "ds"
    put(d / "data" / "train-00000-of-00002.jsonl", [PC] * 2)
    put(d / "data" / "train-00001-of-00002.jsonl", [{"prompt": "Q2", "completion": "A2"}])
    put(d / "data" / "test-00000-of-00001.jsonl", [PC])
    put(d / ".hidden" / "x.jsonl", [{"junk": 1}])
    (d / "README.md").write_text("# not data")
    res = stage(d, "sft", tmp_path)
    assert res.rows == 3 and len(res.files) == 2
    assert stage(str(d) + "?file=test", "sft", tmp_path).rows == 1  # a pattern naming another split's file


def test_file_pattern_glob_and_substring_and_no_match(tmp_path):
    d = tmp_path / "ds"
    put(d / "sft_data-1.jsonl", [PC])
    put(d / "sft_data-2.jsonl", [PC, PC])
    put(d / "pref_data.jsonl", [PREF])
    assert stage(f"{d}?file=sft_data-?.jsonl", "sft", tmp_path).rows == 3   # glob
    assert stage(f"{d}?file=sft_", "sft", tmp_path).rows == 3               # substring of the basename
    assert stage(f"file://{d}?file=pref", "dpo", tmp_path).rows == 1
    with pytest.raises(DatasetError) as e:
        stage(f"{d}?file=*nothing*", "sft", tmp_path)
    text = e.value.render()
    assert "No files in" in text and "match ?file=*nothing*" in text
    assert "Available files:" in text and "  pref_data.jsonl" in text and "  sft_data-1.jsonl" in text


def test_schema_divergence_lists_each_file_and_suggests_a_pattern(tmp_path):
    d = tmp_path / "When2Call"
    put(d / "call_train_00000.jsonl", [PREF])
    put(d / "general_train_00000.jsonl", [PC])
    with pytest.raises(DatasetError) as e:
        stage(d, "dpo", tmp_path)
    text = e.value.render()
    assert f"❌ Schema divergence detected across files in {d}." in text
    assert "📄 call_train_00000.jsonl\n      Columns: chosen, prompt, rejected" in text
    assert "📄 general_train_00000.jsonl\n      Columns: completion, prompt" in text
    assert "Files have different column sets. Use ?file=<pattern> to select compatible files:" in text
    assert f'tuneloop tune --technique dpo --dataset "{d}?file=*call*"' in text
    assert stage(f"{d}?file=*call*", "dpo", tmp_path).rows == 1  # the suggestion works
    with pytest.raises(DatasetError, match="Schema divergence"):
        stage(d, "sft", tmp_path)


def test_suggest_pattern_falls_back_to_prefix_and_name():
    f = lambda n: DataFile(n, n, n)  # noqa: E731
    assert suggest_pattern([f("a1.jsonl"), f("a2.jsonl")], [f("b1.jsonl")]) == "a*"
    assert suggest_pattern([f("x.jsonl")], [f("x.jsonl.bak")]) == "x.jsonl"


def test_mixed_file_formats_in_one_folder_stage_as_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mixed"
    put(d / "part-a.jsonl", [PC])
    pq.write_table(pa.Table.from_pylist([{"prompt": "Q2", "completion": "A2"}]), d / "part-b.parquet")
    res = stage(d, "sft", tmp_path)
    assert res.rows == 2 and res.format == "prompt_completion"


def test_memory_fsspec_url(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/ds/train.jsonl", "wb") as fh:
        fh.write(b"".join(json.dumps(PC).encode() + b"\n" for _ in range(3)))
    with fs.open("/bucket/ds/test.jsonl", "wb") as fh:
        fh.write(json.dumps(PC).encode() + b"\n")
    assert stage("memory://bucket/ds/train.jsonl", "sft", tmp_path).rows == 3
    assert stage("memory://bucket/ds", "sft", tmp_path).rows == 3
    assert stage("memory://bucket/ds?file=test", "sft", tmp_path).rows == 1
    with pytest.raises(DatasetError, match="Dataset not found: memory://bucket/nope.jsonl"):
        stage("memory://bucket/nope.jsonl", "sft", tmp_path)


def test_unknown_scheme_and_missing_names(tmp_path):
    with pytest.raises(DatasetError, match="Unsupported dataset URL|needs a package"):
        stage("nosuchproto://x/y.jsonl", "sft", tmp_path)
    with pytest.raises(DatasetError, match="Dataset file not found"):
        stage(tmp_path / "missing.jsonl", "sft", tmp_path)
    with pytest.raises(DatasetError, match="No dataset file or registered dataset named 'my-data'"):
        stage_dataset("my-data", "sft", tmp_path / "o.jsonl", lookup=lambda ref: None)


def test_registered_dataset_lookup(tmp_path):
    staged = put(tmp_path / "v1.jsonl", [PC])
    rows = {"my-data": {"path": str(staged), "ref": "my-data@v1", "technique": "sft"}}
    res = stage_dataset("my-data", "sft", tmp_path / "o.jsonl", lookup=rows.get)
    assert res.dataset_version == "my-data@v1" and res.rows == 1
    with pytest.raises(DatasetError, match="was staged for sft, not dpo"):
        stage_dataset("my-data", "dpo", tmp_path / "o.jsonl", lookup=rows.get)
    assert resolve(str(staged)).version is None


def test_hf_sources_say_when_the_hub_is_switched_off(tmp_path):
    # tests run with HF_HUB_OFFLINE=1 (conftest): an hf:// source must say so, not hang or crash
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE is set"):
        stage("hf://org/name/train", "sft", tmp_path)
    with pytest.raises(DatasetError, match="does not name a dataset repository"):
        stage("hf://justaname", "sft", tmp_path)
