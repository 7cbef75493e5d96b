"""File formats and the line-level problems staging handles explicitly."""

from __future__ import annotations

import gzip
import json

import pytest

import tuneloop.data.stage as stage_mod
from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError

ROWS = [{"prompt": f"Q{i}", "completion": f"A{i}"} for i in range(5)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


def stage(path, tmp_path, technique="sft", **kw):
    return stage_dataset(str(path), technique, tmp_path / "out.jsonl", lookup=None, **kw)


def errors(path, tmp_path, technique="sft", **kw) -> str:
    with pytest.raises(DatasetError) as e:
        stage(path, tmp_path, technique, **kw)
    assert not (tmp_path / "out.jsonl").exists() and not list(tmp_path.glob("out.jsonl*"))
    return e.value.render()


def test_compressed_jsonl_gzip_and_zstd(tmp_path):
    import zstandard

    plain = stage(tmp_path.joinpath("p.jsonl").write_bytes(JSONL) and tmp_path / "p.jsonl", tmp_path)
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(JSONL))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(JSONL))
    (tmp_path / "noext").write_bytes(gzip.compress(JSONL))  # sniffed: gzip, then JSONL inside
    for name in ("g.jsonl.gz", "z.jsonl.zst", "noext"):
        assert stage(tmp_path / name, tmp_path).sha256 == plain.sha256, name


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(JSONL)[:-12])
    assert "cannot read the file" in errors(tmp_path / "bad.jsonl.gz", tmp_path)


@pytest.mark.parametrize("doc", [ROWS, {"data": ROWS}])
def test_json_array_and_data_object(tmp_path, doc):
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "p.jsonl").write_bytes(JSONL)
    assert stage(tmp_path / "a.json", tmp_path).sha256 == stage(tmp_path / "p.jsonl", tmp_path).sha256


def test_jsonl_saved_as_json_is_read_as_jsonl(tmp_path):
    (tmp_path / "a.json").write_bytes(JSONL)
    assert stage(tmp_path / "a.json", tmp_path).rows == 5


def test_json_errors_say_where(tmp_path):
    (tmp_path / "a.json").write_text('[{"prompt": "a", "completion": "b"},\n {"prompt": 1, "completion": "b"}, 3]')
    text = errors(tmp_path / "a.json", tmp_path)
    assert "a.json: row 2: column 'prompt' must be a string, got number" in text
    assert "a.json: row 3: expected a JSON object, got int" in text


def test_duplicate_keys_are_an_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "prompt": "x", "completion": "b"}\n'
                 '{"prompt": "the word \\"prompt\\" twice: prompt", "completion": "ok"}\n')
    text = errors(p, tmp_path)
    assert "d.jsonl:2: duplicate key 'prompt'" in text and ":3:" not in text


def test_very_long_lines_have_a_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_mod.readers, "CHUNK_BYTES", 64)
    p = tmp_path / "l.jsonl"
    long = json.dumps({"prompt": "x" * 5000, "completion": "y"})
    p.write_text(json.dumps(ROWS[0]) + "\n" + long + "\n" + json.dumps(ROWS[1]) + "\n" + long)
    text = errors(p, tmp_path, max_line_bytes=1024 * 1024 // 1024 * 4)  # 4 KiB limit
    assert "l.jsonl:2: line is longer than" in text and "l.jsonl:4: line is longer than" in text
    assert ":3:" not in text
    assert stage(p, tmp_path, max_line_bytes=10_000).rows == 4


def test_lines_spanning_chunks_and_crlf(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_mod.readers, "CHUNK_BYTES", 7)
    p = tmp_path / "c.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + JSONL.replace(b"\n", b"\r\n\r\n"))
    res = stage(p, tmp_path)
    assert res.rows == 5 and res.rows_read == 5


@pytest.mark.parametrize("line, expected", [
    (b'{"prompt": Infinity, "completion": "x"}', "column 12: Infinity is not valid JSON"),
    (b'{"prompt": -Infinity, "completion": "x"}', "-Infinity is not valid JSON"),
    (b'{"prompt": "a", "completion": "b\xc3"}', "invalid UTF-8 byte 0xc3"),
    (b'"just a string"', "expected a JSON object, got str"),
    (b'{"prompt": "a", "completion": null}', "column 'completion' must be a string, got null"),
    (b'{"prompt": "a", "completion": {"nested": 1}}', "column 'completion' must be a string, got object"),
    (b'{"prompt": "a", "completion": {"role": "assistant", "content": {"x": 1}}}', "Cannot convert value to string"),
    (b'{"prompt": "a"}', "missing column 'completion'"),
])
def test_line_problems(tmp_path, line, expected):
    p = tmp_path / "x.jsonl"
    p.write_bytes(JSONL + line + b"\n")
    assert f"x.jsonl:6: " in (text := errors(p, tmp_path)) and expected in text


def test_first_20_problems_shown_rest_counted(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + "not json\n" * 45)
    text = errors(p, tmp_path)
    assert "45 invalid line(s)" in text and "... and 25 more" in text and "m.jsonl:21:" in text
    assert "m.jsonl:22:" not in text


def test_empty_strings_and_duplicates_are_warned_and_counted(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [ROWS[0], {"prompt": " ", "completion": ""}, ROWS[0], ROWS[0]]))
    res = stage(p, tmp_path)
    assert (res.rows_read, res.rows, res.empty_fields, res.empty_rows, res.duplicates) == (4, 4, 2, 1, 2)
    assert res.warnings == ["1 row(s) have an empty string in a required column (2 empty field(s))",
                            "2 row(s) are exact duplicates of an earlier row"]


def test_csv_rows_and_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b'prompt,completion\r\n"multi\nline",A\r\nQ2,\r\nQ3,A3,extra\r\nQ4,"\xff"\r\n')
    text = errors(p, tmp_path)
    assert "d.csv: row 3: 3 cells but the header has 2 columns" in text
    assert "d.csv: row 4: column 'completion': invalid UTF-8 byte 0xff" in text
    p.write_bytes(b'prompt,completion\r\n"multi\nline",A\r\nQ2,\r\n')
    res = stage(p, tmp_path)
    assert [json.loads(x) for x in res.path.read_text().splitlines()] == [
        {"prompt": "multi\nline", "completion": "A"}, {"prompt": "Q2", "completion": ""}]


def test_parquet_problems_are_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS + [{"prompt": None, "completion": "x"}]), tmp_path / "d.parquet")
    assert "d.parquet: row 6: column 'prompt' must be a string, got null" in errors(tmp_path / "d.parquet", tmp_path)


def test_parallel_staging_equals_sequential(tmp_path, monkeypatch):
    rows = [{"prompt": f"q{i}", "chosen": [{"role": "assistant", "content": f"c{i % 50}"}], "rejected": "r"}
            for i in range(3000)]
    lines = [json.dumps(r) for r in rows]
    p = tmp_path / "big.jsonl"
    p.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(stage_mod, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", "1")
    seq = stage(p, tmp_path, "dpo")
    monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", "3")
    par = stage(p, tmp_path, "dpo")
    assert (par.sha256, par.rows, par.duplicates, par.notes) == (seq.sha256, seq.rows, seq.duplicates, seq.notes)
    (tmp_path / "out.jsonl").unlink()
    lines[2500] = "{broken"
    lines[10] = '{"prompt": 1, "chosen": "a", "rejected": "b"}'
    p.write_text("\n".join(lines) + "\n")
    text = errors(p, tmp_path, "dpo")
    assert "big.jsonl:2501: column 2: invalid JSON" in text and "big.jsonl:11: column 'prompt'" in text
