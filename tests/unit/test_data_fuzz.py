"""Fuzz: 10,000 random and mutated lines. Every line is a staged row or a clear problem with its
line number; nothing raises anything else."""

from __future__ import annotations

import io
import json
import random
import re

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from tuneloop.data.formats import PREFERENCE, make_converter
from tuneloop.data.readers import read_jsonl
from tuneloop.data.stage import stage_dataset
from tuneloop.data.validate import RecordProblem
from tuneloop.errors import DatasetError

N = 10_000
VALID = [
    {"prompt": "p", "chosen": "c", "rejected": "r"},
    {"prompt": "Ünïcödé ✓", "chosen": {"role": "assistant", "content": "c"}, "rejected": [{"role": "assistant", "content": "r"}]},
    {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     "rejected": [{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}], "extra": [1, 2.5, None]},
]
JUNK = [b"NaN", b"Infinity", b"\xff\xfe", b"\x00", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\\u", b"\\ud800",
        b'"prompt"', b"null", b"1e999", b"-", b"\r", b"\xef\xbb\xbf", b"\t", b"true", b"123456789012345678901234567890"]


def mutate(rng: random.Random, line: bytes) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return line
    if kind == 1:
        i = rng.randrange(len(line))
        return line[:i] + line[i + 1:]
    if kind == 2:
        i = rng.randrange(len(line))
        return line[:i] + rng.choice(JUNK) + line[i:]
    if kind == 3:
        return line[: rng.randrange(len(line))]
    if kind == 4:
        i = rng.randrange(len(line))
        return line[:i] + bytes([rng.randrange(256)]) + line[i + 1:]
    if kind == 5:
        return line.replace(b'"chosen"', b'"prompt"', 1)  # duplicate key
    if kind == 6:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    if kind == 7:
        return json.dumps(rng.choice([[], 1, "s", None, {"prompt": 1}, {"a": "b"}])).encode()
    return line.replace(b'"c"', rng.choice([b"null", b"[]", b"{}", b"3", b'{"role": "x"}']), 1)


def lines(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(N):
        base = json.dumps(rng.choice(VALID), ensure_ascii=rng.random() < 0.5).encode()
        out.append(mutate(rng, base).replace(b"\n", b" "))
    return out


def classify(line: bytes, convert) -> str:
    """'row', 'blank' or the problem text, line by line through the same reader and converter."""
    got = list(read_jsonl(io.BytesIO(line)))
    if not got:
        return "blank"
    [(loc, record, problem)] = got
    assert loc == 1
    if problem is not None:
        assert isinstance(problem, str) and len(problem) > 10
        return problem
    try:
        row = convert(record)
    except RecordProblem as e:
        assert e.message
        return e.message
    try:
        orjson.dumps(row)  # staging writes with orjson: lone surrogates cannot be written
    except orjson.JSONEncodeError as e:
        return str(e)
    return "row"


@pytest.mark.parametrize("seed", [0])
def test_fuzzed_lines_are_rows_or_clear_problems(tmp_path, seed):
    data = lines(seed)
    convert = make_converter("dpo", PREFERENCE)
    verdicts = [classify(line, convert) for line in data]
    good = [i for i, v in enumerate(verdicts) if v == "row"]
    bad = [i for i, v in enumerate(verdicts) if v not in ("row", "blank")]
    assert len(good) > 1000 and len(bad) > 1000

    # the whole file: one error counting exactly the bad lines, the first 20 with their line numbers
    first = json.dumps(VALID[0]).encode()
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join([first] + data) + b"\n")
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(path), "dpo", tmp_path / "out.jsonl", lookup=None)
    text = e.value.render()
    assert f"has {len(bad)} invalid line(s)" in text and "Traceback" not in text
    shown = [int(m) for m in re.findall(r"fuzz\.jsonl:(\d+): ", text)]
    assert shown == [i + 2 for i in bad[:20]]
    assert not (tmp_path / "out.jsonl").exists()

    # only the good lines: every one is staged
    path.write_bytes(b"\n".join([first] + [data[i] for i in good]) + b"\n")
    assert stage_dataset(str(path), "dpo", tmp_path / "out.jsonl", lookup=None).rows == len(good) + 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_never_raise(raw):
    convert = make_converter("dpo", PREFERENCE)
    for loc, record, problem in read_jsonl(io.BytesIO(raw)):
        assert (record is None) != (problem is None)
        if record is not None:
            try:
                convert(record)
            except RecordProblem:
                pass
