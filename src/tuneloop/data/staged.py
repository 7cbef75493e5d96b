"""The one reader of staged JSONL: the files `stage_dataset` writes (a job's data/train.jsonl and
data/validation.jsonl, a dataset version's data.jsonl) and other JSONL files of rows that
tuneloop's own commands take (a demo set, `tuneloop test --dataset`).

One JSON object a line; blank lines are skipped. Untrusted source files are read by
`data/readers.py` instead, with its byte, record and row limits.

    for row in iter_rows(Path("train.jsonl"), limit=64): ...
    rows = read_rows(path)          # a list
    n = count_rows(path)            # non-blank lines
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import orjson

from tuneloop.errors import DatasetError


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)        # staging writes with orjson, so its files always parse here
    except orjson.JSONDecodeError:
        return json.loads(line)          # a hand-written file may hold NaN or integers beyond 64 bits


def iter_rows(path: Path | str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL file in order, at most `limit` of them. A line that is not JSON is a
    DatasetError naming the file and line."""
    if limit is not None and limit <= 0:
        return
    n = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = _loads(line)
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: invalid JSON.", param="dataset",
                                   hint="Each non-blank line must be one JSON object; restage the data "
                                        "with `tuneloop datasets stage` if the file was edited.") from None
            yield row
            n += 1
            if limit is not None and n >= limit:
                return


def read_rows(path: Path | str, limit: int | None = None) -> list[dict[str, Any]]:
    """`iter_rows` as a list."""
    return list(iter_rows(path, limit))


def count_rows(path: Path | str) -> int:
    """Rows of a JSONL file (its non-blank lines), without parsing them."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
