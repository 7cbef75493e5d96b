"""Stage a dataset: read the source, rename columns, flatten chat-format columns, validate every
line, and write canonical JSONL. Nothing is written when any line is bad.

    from tuneloop.data.stage import stage_dataset
    result = stage_dataset("train.jsonl", "sft", Path("staged.jsonl"))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneloop.data.schema import EXAMPLES, SCHEMAS
from tuneloop.data.transforms import describe_shape, detect_chat_shape, flatten, parse_column_map, rename_columns
from tuneloop.data.validate import RecordProblem, check_types, missing_columns, suggest_column_map
from tuneloop.errors import DatasetError

MAX_SHOWN = 20


@dataclass
class StageResult:
    path: Path
    rows: int
    sha256: str
    columns: list[str]
    notes: list[str] = field(default_factory=list)       # auto-conversions, reported once each
    warnings: list[str] = field(default_factory=list)    # empty fields, duplicates

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "sha256": self.sha256, "columns": self.columns,
                "notes": self.notes, "warnings": self.warnings}


def _local_path(source: str) -> Path:
    path = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
    if re.match(r"^[a-z][a-z0-9+.-]*://", source) and not source.startswith("file://"):
        raise DatasetError(
            f"Dataset source {source!r} is not supported yet.",
            hint="Pass a local JSONL file (path or file://).", param="dataset")
    if not path.exists():
        raise DatasetError(f"Dataset file not found: {path}", hint="Check the path passed to --dataset.",
                           param="dataset")
    if path.is_dir():
        raise DatasetError(f"Dataset {path} is a directory.", hint="Pass a .jsonl file inside it.", param="dataset")
    return path


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line_no, record, problem) for every non-blank line; constant memory."""
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, None, f"column {e.start + 1}: invalid UTF-8 byte 0x{raw[e.start]:02x}; save the file as UTF-8"
                continue
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_constant=_reject_constant)
            except json.JSONDecodeError as e:
                yield line_no, None, f"column {e.colno}: invalid JSON ({e.msg})"
                continue
            except ValueError as e:
                yield line_no, None, str(e)
                continue
            if not isinstance(record, dict):
                yield line_no, None, f"expected a JSON object, got {type(record).__name__}"
                continue
            yield line_no, record, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; write null or a finite number")


def stage_dataset(source: str, technique: str, output: Path, *, column_map: str | None = None,
                  no_transform: bool = False, take: int | None = None) -> StageResult:
    """Validate the whole source and write canonical JSONL to `output` (atomically)."""
    path = _local_path(source)
    mapping = parse_column_map(column_map)
    schema = SCHEMAS[technique]
    problems: list[str] = []
    n_problems = 0
    notes: list[str] = []
    shapes: dict[str, tuple[str, int]] | None = None
    rows = empty = dupes = 0
    seen: set[bytes] = set()
    digest = hashlib.sha256()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    first_columns: list[str] | None = None

    def problem(line_no: int, msg: str) -> None:
        nonlocal n_problems
        n_problems += 1
        if len(problems) < MAX_SHOWN:
            problems.append(f"{path}:{line_no}: {msg}")

    with open(tmp, "w", encoding="utf-8") as out:
        for line_no, record, error in iter_jsonl(path):
            if take is not None and rows >= take:
                break
            if error:
                problem(line_no, error)
                continue
            record = rename_columns(record, mapping)
            if technique == "sft" and "prompt" not in record and {"input", "output"} <= record.keys():
                record = {("prompt" if k == "input" else "completion" if k == "output" else k): v
                          for k, v in record.items()}  # SageMaker's input/output SFT format
            missing = missing_columns(list(record), technique)
            if missing:
                if first_columns is None:
                    out.close()
                    tmp.unlink(missing_ok=True)
                    raise _column_mismatch(path, line_no, list(record), technique, source)
                problem(line_no, f"missing column(s) {', '.join(missing)}")
                continue
            first_columns = first_columns or list(record)
            if shapes is None:  # the seed detects chat format on the first record only
                shapes = {c: s for c, kind in schema.items() if kind == "string"
                          and (s := detect_chat_shape(record.get(c))) is not None}
                for col, (strategy, n) in shapes.items():
                    if no_transform:
                        out.close()
                        tmp.unlink(missing_ok=True)
                        raise DatasetError(
                            f"Column '{col}' contains chat-format data (detected: {strategy}) but "
                            "--no-transform is active.",
                            hint=f"Remove --no-transform to enable automatic conversion:\n"
                                 f"  tuneloop tune --technique {technique} --dataset {source}",
                            param="no_transform")
                    notes.append(f"ℹ️  Auto-converted column '{col}' from chat-format to string\n"
                                 f"   Format: {describe_shape(strategy, n)}")
            try:
                for col in shapes:
                    record[col] = flatten(record[col])
                canonical = check_types(record, technique)
            except (RecordProblem, ValueError) as e:
                problem(line_no, str(e))
                continue
            if any(isinstance(v, str) and not v.strip() for k, v in canonical.items() if k in schema):
                empty += 1
            line = json.dumps(canonical, ensure_ascii=False, sort_keys=False)
            key = hashlib.blake2b(line.encode(), digest_size=16).digest()
            if key in seen:
                dupes += 1
            seen.add(key)
            out.write(line + "\n")
            digest.update(line.encode() + b"\n")
            rows += 1
    if n_problems:
        tmp.unlink(missing_ok=True)
        more = [f"... and {n_problems - len(problems)} more"] if n_problems > len(problems) else []
        raise DatasetError(
            f"Dataset {path} has {n_problems} invalid line(s) for {technique}.",
            details=problems + more + ["Expected one JSON object per line, e.g.:", EXAMPLES[technique]],
            hint="Fix the lines above and run the command again.", param="dataset")
    if rows == 0:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"Dataset {path} has no records.",
                           hint=f"Add one JSON object per line, e.g.:\n  {EXAMPLES[technique]}", param="dataset")
    os.replace(tmp, output)
    warnings = []
    if empty:
        warnings.append(f"{empty} row(s) have an empty string in a required column")
    if dupes:
        warnings.append(f"{dupes} row(s) are exact duplicates of an earlier row")
    return StageResult(output, rows, digest.hexdigest(), list(schema), notes, warnings)


def _column_mismatch(path: Path, line_no: int, columns: list[str], technique: str, source: str) -> DatasetError:
    required = list(SCHEMAS[technique])
    missing = missing_columns(columns, technique)
    suggestion = suggest_column_map(columns, technique)
    hint = "Rename the columns in the file, or map them with --column-map SOURCE:TARGET."
    if suggestion:
        cmap = ",".join(f"{s}:{d}" for s, d in suggestion.items())
        hint = f"Map your columns onto the expected ones:\n  tuneloop tune --technique {technique} " \
               f"--dataset {source} --column-map \"{cmap}\""
    return DatasetError(
        f"Dataset {path} does not have the columns {technique} needs (line {line_no}).",
        details=[f"Required: {', '.join(required)}", f"Detected: {', '.join(columns) or '(none)'}",
                 f"Missing:  {', '.join(missing)}"],
        hint=hint, param="dataset")
