"""Pure record transforms: column map parsing/renaming, chat-format detection and flattening.

A column map renames (`src:dst` or `dst=src`) and drops (`src:` or `src=`): a dropped
column is left out of the staged rows on purpose, which is how a text column the record format
does not read is let through. Two columns renamed onto one name are refused, never overwritten.

No I/O here; `stage.py` reads and writes. Strategies follow the seed: a single message dict
gives its content, a one-element list its content, several messages of one role their contents
joined by newlines, mixed roles `role: content` lines; an empty list becomes "".
"""

from __future__ import annotations

from typing import Any

from tuneloop.errors import DatasetError

SINGLE_DICT = "single_dict"
SINGLE_ELEMENT_LIST = "single_element_list"
SAME_ROLE = "same_role_multi"
MIXED_ROLES = "mixed_roles"
EMPTY_LIST = "empty_list"

DESCRIBE = {
    SINGLE_DICT: "extracted content field",
    SINGLE_ELEMENT_LIST: "extracted content field",
    EMPTY_LIST: "empty list to empty string",
}


DROP = ""  # the target of a dropped column in a parsed column map


def parse_column_map(text: str | None) -> dict[str, str]:
    """`src:dst,src2:dst2` (seed docs) or `dst=src,dst2=src2` (seed code) -> {src: dst}; an entry
    with one empty side (`notes:`, `notes=`, `=notes`) drops that column ({src: DROP})."""
    if not text:
        return {}
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            dst, _, src = part.partition("=")
        elif ":" in part:
            src, _, dst = part.partition(":")
        else:
            raise DatasetError(
                f"Cannot parse --column-map entry {part!r}.",
                hint="Write source:target pairs (input:prompt,output:completion) or target=source pairs "
                "(prompt=question,completion=answer); drop a column with source: (notes:).", param="column_map",
            )
        src, dst = src.strip(), dst.strip()
        if not src:  # `=notes` or `:notes`: one empty side drops the column the entry names
            src, dst = dst, DROP
        if not src:
            raise DatasetError(f"--column-map entry {part!r} names no column.", param="column_map",
                               hint="Rename with source:target (question:prompt) or drop with source: (notes:).")
        if src in mapping and mapping[src] != dst:
            raise DatasetError(f"--column-map names column {src!r} twice ({mapping[src] or 'dropped'} and "
                               f"{dst or 'dropped'}).", param="column_map", hint="Keep one entry per column.")
        mapping[src] = dst
    targets = [d for d in mapping.values() if d]
    twice = sorted({d for d in targets if targets.count(d) > 1})
    if twice:
        raise DatasetError(f"--column-map renames several columns onto {', '.join(map(repr, twice))}.",
                           param="column_map", hint="Map one source column onto each target; drop the others "
                           "with source: (notes:).")
    return mapping


def rename_columns(record: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """The record with the map applied (dropped columns left out). Raises ValueError when a
    renamed column lands on a column the record already has (neither is dropped silently)."""
    if not mapping:
        return record
    out: dict[str, Any] = {}
    for k, v in record.items():
        d = mapping.get(k, k)
        if d == DROP:
            continue
        if d in out or (d != k and d in record and mapping.get(d, d) == d):
            src = k if d != k else next(s for s, t in mapping.items() if t == d)
            raise ValueError(f"--column-map renames column '{src}' to '{d}', but the row already has a '{d}' "
                             f"column; drop one explicitly (--column-map '{d}:,{src}:{d}' keeps '{src}') or "
                             "rename the other elsewhere")
        out[d] = v
    return out


def _is_message(value: Any) -> bool:
    return isinstance(value, dict) and "content" in value and ("role" in value or len(value) == 1)


def detect_chat_shape(value: Any) -> tuple[str, int] | None:
    """Return (strategy, n_messages) when `value` is chat-format, else None."""
    if _is_message(value):
        return SINGLE_DICT, 1
    if isinstance(value, list):
        if not value:
            return EMPTY_LIST, 0
        if all(_is_message(m) for m in value):
            if len(value) == 1:
                return SINGLE_ELEMENT_LIST, 1
            roles = {m.get("role") for m in value}
            return (SAME_ROLE if len(roles) == 1 else MIXED_ROLES), len(value)
    return None


def describe_shape(strategy: str, n: int) -> str:
    if strategy == SAME_ROLE:
        return f"newline-joined content ({n} messages, same role)"
    if strategy == MIXED_ROLES:
        return f"role: content (multi-turn, {n} messages)"
    return DESCRIBE[strategy]


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # OpenAI content parts
    raise ValueError(f"Cannot convert value to string: {value!r:.80}")


def flatten(value: Any) -> str:
    """Flatten one chat-format value to a string (raises ValueError when it cannot)."""
    if isinstance(value, str):
        return value
    shape = detect_chat_shape(value)
    if shape is None:
        return _to_text(value)
    strategy, _ = shape
    if strategy == SINGLE_DICT:
        return _to_text(value["content"])
    if strategy == EMPTY_LIST:
        return ""
    if strategy in (SINGLE_ELEMENT_LIST, SAME_ROLE):
        return "\n".join(_to_text(m["content"]) for m in value)
    return "\n".join(f"{m.get('role', 'user')}: {_to_text(m['content'])}" for m in value)


def flatten_shape(value: Any) -> tuple[str, int, str] | None:
    """One pass of `detect_chat_shape` and `flatten`: (strategy, n_messages, text) for a
    chat-format value, None when the value is not chat format. Same results, several times
    faster: the staging hot path calls it for every chat-format cell, so the one- and
    two-message cases are unrolled (list comprehensions cost more than the work here)."""
    if isinstance(value, dict):
        if "content" in value and ("role" in value or len(value) == 1):
            c = value["content"]
            return SINGLE_DICT, 1, c if type(c) is str else _to_text(c)
        return None
    if not isinstance(value, list):
        return None
    n = len(value)
    if n == 0:
        return EMPTY_LIST, 0, ""
    if n == 1:
        m = value[0]
        if isinstance(m, dict) and "content" in m and ("role" in m or len(m) == 1):
            c = m["content"]
            return SINGLE_ELEMENT_LIST, 1, c if type(c) is str else _to_text(c)
        return None
    if n == 2:
        m0, m1 = value
        if not (isinstance(m0, dict) and isinstance(m1, dict)):
            return None
        c0 = m0.get("content", _MISSING)
        c1 = m1.get("content", _MISSING)
        r0 = m0.get("role", _MISSING)
        r1 = m1.get("role", _MISSING)
        if c0 is _MISSING or c1 is _MISSING or (r0 is _MISSING and len(m0) != 1) or (r1 is _MISSING and len(m1) != 1):
            return None
        if type(c0) is not str:
            c0 = _to_text(c0)
        if type(c1) is not str:
            c1 = _to_text(c1)
        if (None if r0 is _MISSING else r0) == (None if r1 is _MISSING else r1):
            return SAME_ROLE, 2, c0 + "\n" + c1
        return MIXED_ROLES, 2, f"{'user' if r0 is _MISSING else r0}: {c0}\n{'user' if r1 is _MISSING else r1}: {c1}"
    roles = []
    contents = []
    for m in value:
        if not isinstance(m, dict):
            return None
        c = m.get("content", _MISSING)
        if c is _MISSING:
            return None
        r = m.get("role", _MISSING)
        if r is _MISSING and len(m) != 1:
            return None
        roles.append(r)
        contents.append(c)
    for i, c in enumerate(contents):
        if type(c) is not str:
            contents[i] = _to_text(c)
    first = None if roles[0] is _MISSING else roles[0]
    if all((None if r is _MISSING else r) == first for r in roles):
        return SAME_ROLE, n, "\n".join(contents)
    return MIXED_ROLES, n, "\n".join([f"{'user' if r is _MISSING else r}: {c}" for r, c in zip(roles, contents)])


_MISSING = object()
