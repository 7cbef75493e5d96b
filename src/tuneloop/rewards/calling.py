"""How a user reward function is called, by its signature. Standard library only: this runs
inside sandbox workers (and in-process for benchmarks).

Three conventions, picked from the function's parameters:

- per sample (the default): `fn(prompt=..., completion=..., **row)` with `prompt` the message
  list (also given as `messages`), `completion` the answer text, `id`, and every extra column of
  the row. Only the names the function declares are passed, unless it takes `**kwargs`.
- TRL style, when it has a `completions` parameter: one call per batch, `fn(prompts=[...],
  completions=[[{"role": "assistant", "content": ...}]], **{column: [values]})`, returning a list.
- OpenAI python grader, `grade(sample, item)`: `sample = {"output_text", "output_json", "choices"}`,
  `item` = the row with `messages`.

Each returns a float or the seed's `{id, aggregate_reward_score, metrics_list}` item.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

from tuneloop.rewards.base import Score, coerce


def convention(fn: Callable) -> str:
    """'batch' | 'grade' | 'sample'."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return "sample"
    names = list(params)
    if "completions" in params:
        return "batch"
    if names[:2] == ["sample", "item"]:
        return "grade"
    return "sample"


def _accepts(fn: Callable) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set(), True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}, var_kw


def sample_kwargs(s: dict[str, Any]) -> dict[str, Any]:
    row = dict(s.get("row") or {})
    return {**row, "id": s["id"], "prompt": s["prompt"], "messages": s["prompt"], "completion": s["completion"]}


def grade_args(s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sample, item) of an OpenAI python grader."""
    text = s["completion"]
    try:
        parsed = json.loads(text)
    except (ValueError, TypeError):
        parsed = None
    sample = {"output_text": text, "output_json": parsed,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    item = {**(s.get("row") or {}), "messages": s["prompt"], "id": s["id"]}
    return sample, item


def call_one(fn: Callable, s: dict[str, Any], kind: str | None = None) -> Any:
    """Call `fn` on one sample (sample or grade convention); returns its raw value."""
    kind = kind or convention(fn)
    if kind == "grade":
        sample, item = grade_args(s)
        return fn(sample, item)
    names, var_kw = _accepts(fn)
    kwargs = sample_kwargs(s)
    if not var_kw:
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return fn(**kwargs)


def call_batch(fn: Callable, samples: list[dict[str, Any]]) -> list[Score]:
    """TRL-style call on the whole batch; a wrong-length or non-list result fails every sample."""
    names, var_kw = _accepts(fn)
    columns: dict[str, list[Any]] = {}
    for s in samples:
        for k in (s.get("row") or {}):
            columns.setdefault(k, [])
    for k in columns:
        columns[k] = [(s.get("row") or {}).get(k) for s in samples]
    kwargs: dict[str, Any] = {**columns, "prompts": [s["prompt"] for s in samples],
                              "completions": [[{"role": "assistant", "content": s["completion"]}] for s in samples],
                              "completion_texts": [s["completion"] for s in samples],
                              "ids": [s["id"] for s in samples]}
    if not var_kw:
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    out = fn(**kwargs)
    if not isinstance(out, (list, tuple)) or len(out) != len(samples):
        got = f"{type(out).__name__} of length {len(out)}" if isinstance(out, (list, tuple)) else type(out).__name__
        return [Score.failed("type", f"batch reward function returned {got}; expected a list of "
                                     f"{len(samples)} rewards (one per completion)")] * len(samples)
    return [coerce(v) for v in out]
