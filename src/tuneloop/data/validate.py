"""Pure validation of one record against a technique's canonical schema.

`canonical_record` returns the canonical dict or raises `RecordProblem` saying which column
is wrong and what was expected; `suggest_column_map` builds the hint for a column mismatch;
`holds_text` and `is_metadata_column` decide which unread columns staging may not drop silently.
"""

from __future__ import annotations

import difflib
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.data.schema import ALIASES, REFERENCE_COLUMNS, SCHEMAS

# Columns that describe a row rather than hold what it says: never refused when a format does not
# read them (besides the reference-answer columns, which graders and evaluation read).
METADATA_COLUMNS = frozenset((
    "id", "idx", "index", "uid", "uuid", "key", "meta", "metadata", "source", "sources", "dataset", "subset", "split", "url", "urls",
    "link", "category", "categories", "tag", "tags", "task", "task_type", "type", "topic", "domain", "lang",
    "language", "license", "date", "timestamp", "created", "created_at", "model", "models", "author",
    "reward", "rewards", "reward_model", "score", "scores", "rating", "ratings", "weight", "difficulty", "level",
)) | frozenset(REFERENCE_COLUMNS)
_METADATA_AFFIXES = ("_id", "_ids", "_score", "_scores", "_rating", "_ratings", "_reward", "_rewards", "_model",
                     "score_", "rating_", "reward_")


class RecordProblem(Exception):
    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.message = message
        self.column = column


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def check_types(record: dict[str, Any], technique: str) -> dict[str, Any]:
    """Keep the canonical columns (plus extra columns for RL techniques) after checking types."""
    schema = SCHEMAS[technique]
    out: dict[str, Any] = {}
    for col, kind in schema.items():
        value = record[col]
        if kind == "string" and not isinstance(value, str):
            raise RecordProblem(f"column '{col}' must be a string, got {_type_name(value)}", col)
        if kind == "array":
            if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
                for m in value
            ):
                raise RecordProblem(
                    f"column '{col}' must be a non-empty array of {{\"role\", \"content\"}} messages, "
                    f"got {_type_name(value)}", col)
        out[col] = value
    if technique in RL_TECHNIQUES:  # reward functions read the other columns
        out.update({k: v for k, v in record.items() if k not in out})
    return out


def missing_columns(columns: list[str], technique: str) -> list[str]:
    return [c for c in SCHEMAS[technique] if c not in columns]


def suggest_column_map(columns: list[str], technique: str) -> dict[str, str]:
    """{source column present -> canonical column missing}, from aliases then close spellings."""
    present = [c for c in columns if c not in SCHEMAS[technique]]
    suggestion: dict[str, str] = {}
    for target in missing_columns(columns, technique):
        lowered = {c.lower(): c for c in present if c not in suggestion}
        pick = next((lowered[a] for a in ALIASES.get(target, ()) if a in lowered), None)
        if pick is None:
            close = difflib.get_close_matches(target, list(lowered), n=1, cutoff=0.6)
            pick = lowered[close[0]] if close else None
        if pick is not None:
            suggestion[pick] = target
    # Nothing close for the rest: pair the leftover columns with the leftover targets, in order,
    # when there are exactly as many of each (e.g. {"q", "a"} -> q:prompt, a:completion).
    targets = [t for t in missing_columns(columns, technique) if t not in suggestion.values()]
    leftover = [c for c in present if c not in suggestion]
    if targets and len(leftover) == len(targets):
        suggestion.update(zip(leftover, targets))
    return suggestion


def is_metadata_column(name: str) -> bool:
    """An id, source, reward or reference-answer column (by name): unread, it is left out quietly."""
    low = name.lower()
    return low in METADATA_COLUMNS or low.endswith(_METADATA_AFFIXES[:8]) or low.startswith(_METADATA_AFFIXES[8:])


def _dense_script(s: str) -> bool:
    """Written without spaces between words: CJK (from U+2E80 on) and Thai, Lao, Khmer, Myanmar."""
    return sum(1 for ch in s if ord(ch) >= 0x2E80 or 0x0E00 <= ord(ch) <= 0x17FF) >= 8


def holds_text(value: Any, depth: int = 0) -> bool:
    """Whether a cell holds text someone wrote (the measure of a "text column"): a string of three
    or more words, or of eight or more characters of a script written without spaces (Chinese,
    Japanese, Thai...), or a list/object holding one (chat turns, history pairs). Labels, ids,
    hashes, URLs, dates, numbers and booleans are not text."""
    if type(value) is str:
        return len(value.split(None, 2)) >= 3 or _dense_script(value)
    if depth < 3 and type(value) is list:
        return any(holds_text(v, depth + 1) for v in value[:64])
    if depth < 3 and type(value) is dict:
        return any(holds_text(v, depth + 1) for v in list(value.values())[:64])
    return False


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {} or (type(value) is str and value.isspace())
