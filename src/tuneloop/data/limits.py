"""How much one dataset may make tuneloop read: datasets come from people we do not trust.

    TUNELOOP_MAX_DATASET_BYTES   decompressed bytes of one source, all its files     default 20 GiB
    TUNELOOP_MAX_DATASET_ROWS    records of one source                              default 10,000,000
    TUNELOOP_MAX_RECORD_BYTES    one record: a JSONL line, a JSON array element,     default 16 MiB
                                 a CSV row, a parquet row

Values are integers, optionally with a unit: `512MiB`, `20GiB`, `64KB`, `5_000_000`.
Why these defaults: 10 million rows is more than the biggest public instruction and preference
sets (OpenHermes 1M, UltraFeedback 64k, SlimOrca 518k); 20 GiB is 2 KB a row at the row cap, and
the staged copy needs about as much disk, staged at ~100 MB/s a core (a few minutes); 16 MiB
is about four million tokens of text, far past any model's context. A gzip or zstd bomb stops
after at most 20 GiB of decompressed bytes read 1 MiB at a time, never held at once.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from tuneloop.errors import ConfigError, DatasetError

GiB, MiB = 1 << 30, 1 << 20
DEFAULTS = {"TUNELOOP_MAX_DATASET_BYTES": 20 * GiB, "TUNELOOP_MAX_DATASET_ROWS": 10_000_000,
            "TUNELOOP_MAX_RECORD_BYTES": 16 * MiB}
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2, "mib": MiB,
          "g": 1000**3, "gb": 1000**3, "gib": GiB, "t": 1000**4, "tb": 1000**4, "tib": 1 << 40}
_VALUE = re.compile(r"^\s*(\d[\d_]*)\s*([a-zA-Z]*)\s*$")


@dataclass(frozen=True)
class Limits:
    dataset_bytes: int
    rows: int
    record_bytes: int


def _env(name: str) -> int:
    raw = os.environ.get(name)
    if not raw:
        return DEFAULTS[name]
    m = _VALUE.match(raw)
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if unit is None or int(m.group(1)) < 1:
        raise ConfigError(f"{name}={raw!r} is not a positive size.",
                          hint=f"Write a number, optionally with a unit, e.g. {name}=" +
                               ("5000000" if "ROWS" in name else "32GiB"))
    return int(m.group(1)) * unit


def current() -> Limits:
    """The limits in force now (the environment is read on every call, so tests can lower them)."""
    return Limits(_env("TUNELOOP_MAX_DATASET_BYTES"), _env("TUNELOOP_MAX_DATASET_ROWS"),
                  _env("TUNELOOP_MAX_RECORD_BYTES"))


def size(n: int) -> str:
    """21474836480 -> "20 GiB"; 10000 -> "9.77 KiB"; 500 -> "500 bytes"."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{round(n / scale, 2):g} {unit}"
    return f"{n} bytes"


def shell_arg(s: str, *, quoted: bool = False) -> str:
    """`s` as one copy-pasteable shell word. Kept in the messages' double quotes when nothing in
    it is special inside them (`quoted` asks for them even when it would need none); otherwise
    shlex.quote, so `my data;rm -rf ~.jsonl` or `$(x).jsonl` can never run as a command."""
    if not any(c in s for c in '"$`\\!') and s.isprintable():
        return f'"{s}"' if quoted or shlex.quote(s) != s else s
    return shlex.quote(s)


class Budget:
    """What one source may still read, shared by its files: decompressed bytes, then rows."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or current()
        self.bytes_left = self.limits.dataset_bytes

    def charge(self, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise LimitExceeded("bytes", self.limits.dataset_bytes)


class LimitExceeded(DatasetError):
    """Raised where the cap is hit (a stream, a reader); `stage` re-raises it with the file, the
    line and the command to run instead (`located`)."""

    ENV = {"bytes": "TUNELOOP_MAX_DATASET_BYTES", "rows": "TUNELOOP_MAX_DATASET_ROWS"}

    def __init__(self, kind: str, limit: int):
        self.kind, self.limit = kind, limit
        super().__init__(self._what("The dataset") + ".", param="dataset")

    def _what(self, dataset: str) -> str:
        if self.kind == "bytes":
            return f"{dataset} is larger than {size(self.limit)} decompressed, the limit for one dataset"
        return f"{dataset} has more than {self.limit:,} rows, the limit for one dataset"

    def located(self, label: str, where: str, source: str, command: str) -> DatasetError:
        env = self.ENV[self.kind]
        bigger = f"{self.limit * 4 // GiB}GiB" if self.kind == "bytes" and self.limit >= GiB else str(self.limit * 4)
        counted = "decompressed bytes" if self.kind == "bytes" else "rows"
        return DatasetError(
            f"{self._what(f'Dataset {label}')}: reading stopped at {where}.",
            details=[f"Limit: {env}={self.limit} ({counted} of all the files of one source count)."],
            hint=f"Split the data into smaller datasets (or stage part of it with --take N), or raise the limit "
                 f"for data you trust:\n  {env}={bigger} {command} --dataset {shell_arg(source)}",
            param="dataset")


def record_too_long(limit: int, unit: str = "line") -> str:
    """The problem for one record over TUNELOOP_MAX_RECORD_BYTES (shown with its file and line)."""
    return (f"{unit} is longer than {size(limit)}, the limit for one record (TUNELOOP_MAX_RECORD_BYTES); "
            "split the record, check that the file has one JSON object per line, or raise the limit")
