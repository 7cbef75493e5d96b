"""The one staged-JSONL reader: rows in order, blank lines skipped, a limit, counts, and a bad
line named by file and line."""

from __future__ import annotations

import pytest

from tuneloop.data.staged import count_rows, iter_rows, read_rows
from tuneloop.errors import DatasetError


def test_rows_in_order_skipping_blank_lines(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"prompt": "a", "completion": "1"}\n\n{"prompt": "b", "completion": "2"}\n  \n{"x": NaN}\n')
    assert [r.get("prompt") for r in iter_rows(p)] == ["a", "b", None]
    assert read_rows(p, 2) == [{"prompt": "a", "completion": "1"}, {"prompt": "b", "completion": "2"}]
    assert read_rows(p, 0) == []
    assert count_rows(p) == 3


def test_a_line_that_is_not_json_names_its_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a"}\n\n{"prompt": "b" "completion": 1}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: invalid JSON") as e:
        read_rows(p)
    assert e.value.hint
