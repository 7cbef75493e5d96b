"""Verify rewards on sample rows before any training (SageMaker verifies reward functions on sample
rows before a job is submitted; `tuneloop tune` does it for every RL job, `tuneloop evaluators
verify` on demand).

Each distinct reward of the data (the rows' `reward_model`, else the job's) runs on up to
`samples` of its rows, with test completions: the row's reference answer when it has one, else
"I don't know." (or the completions given). A reward passes when every call returns a finite
score; errors, timeouts, wrong return types and memory blow-ups are reported with their message.
A local judge model is only checked (template rendered, model found) unless `run_local_judges`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.data.schema import REFERENCE_COLUMNS
from tuneloop.data.staged import iter_rows
from tuneloop.rewards.base import Sample, Score
from tuneloop.rewards.functions import RewardContext, _Failing

PLACEHOLDER = "I don't know."


@dataclass
class VerifyResult:
    row: int
    label: str
    completion: str
    score: Score


@dataclass
class VerifyReport:
    ref: str
    name: str
    results: list[VerifyResult] = field(default_factory=list)
    note: str | None = None

    @property
    def failures(self) -> list[VerifyResult]:
        return [r for r in self.results if r.score.error is not None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def first_error(self) -> str | None:
        f = self.failures
        return f[0].score.error.message if f else None

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "name": self.name, "ok": self.ok, "note": self.note,
                "results": [{"row": r.row, "label": r.label, "completion": r.completion, "score": r.score.value,
                             "metrics": r.score.metrics, "error": r.score.error.to_dict() if r.score.error else None}
                            for r in self.results]}


def rows_by_reward(path: Path, per_reward: int) -> list[dict[str, Any]]:
    """Up to `per_reward` rows for each distinct `reward_model` of a staged file (one pass)."""
    picked: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for row in iter_rows(path):
        ref = row.get("reward_model") or ""
        if counts.get(ref, 0) < per_reward:
            counts[ref] = counts.get(ref, 0) + 1
            picked.append(row)
    return picked


def rewards_in(path: Path) -> dict[str, int]:
    """Distinct `reward_model` values of a staged file and how many rows use each."""
    counts: dict[str, int] = {}
    for row in iter_rows(path):
        ref = row.get("reward_model")
        if ref:
            counts[ref] = counts.get(ref, 0) + 1
    return counts


def test_completions(row: dict[str, Any], given: list[str] | None) -> list[tuple[str, str]]:
    if given:
        return [(f"given {i + 1}", c) for i, c in enumerate(given)]
    for col in REFERENCE_COLUMNS:
        value = row.get(col)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            return [(f"reference ({col})", str(value))]
    return [("placeholder", PLACEHOLDER)]


def _is_unloaded_local_judge(fn: Any, ctx: RewardContext) -> bool:
    from tuneloop.rewards.judge import LocalJudge

    return isinstance(getattr(fn, "judge", None), LocalJudge) and not ctx.load_local_judges


def verify_rows(ctx: RewardContext, rows: list[dict[str, Any]], *, default_ref: str | None = None, samples: int = 8,
                completions: list[str] | None = None) -> list[VerifyReport]:
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, row in enumerate(rows):
        ref = row.get("reward_model") or default_ref
        if ref:
            groups.setdefault(ref, []).append((i, row))
    if not groups and default_ref:
        groups[default_ref] = []
    reports = []
    for ref, members in groups.items():
        fn = ctx.resolve(ref)
        report = VerifyReport(ref, fn.name)
        batch: list[tuple[int, str, Sample]] = []
        for i, row in members[:samples]:
            extra = {k: v for k, v in row.items() if k not in ("prompt", "reward_model")}
            for label, completion in test_completions(extra, completions):
                batch.append((i, label, Sample(f"verify-{i}-{len(batch)}", row["prompt"], completion, extra)))
        if isinstance(fn, _Failing):
            report.results = [VerifyResult(i, label, s.completion, Score.failed(fn.kind, fn.message))
                              for i, label, s in batch] or [VerifyResult(-1, "-", "", Score.failed(fn.kind, fn.message))]
        elif _is_unloaded_local_judge(fn, ctx):
            from tuneloop.rewards.judge import resolve_local_model
            from tuneloop.rewards.prompts import PromptError

            report.note = f"judge {fn.judge.name} found; not run here (tuneloop evaluators verify runs it)"
            try:
                resolve_local_model(fn.judge.ref, ctx.models_dir)
            except ValueError as e:
                report.results = [VerifyResult(-1, "-", "", Score.failed("config", str(e)))]
            for i, label, s in batch:
                try:
                    fn.renderer.render(s)
                    report.results.append(VerifyResult(i, label, s.completion, Score(None)))
                except PromptError as e:
                    report.results.append(VerifyResult(i, label, s.completion, Score.failed("config", str(e))))
        else:
            # the first sample alone first: a reward that hangs or crashes costs one timeout, not one per row
            scores = fn.score([s for _, _, s in batch[:1]]) if batch else []
            if scores and scores[0].ok and len(batch) > 1:
                scores += fn.score([s for _, _, s in batch[1:]])
            report.results = [VerifyResult(i, label, s.completion, sc) for (i, label, s), sc in zip(batch, scores)]
        reports.append(report)
    return reports


def failure_details(reports: list[VerifyReport], limit: int = 6) -> list[str]:
    lines = []
    for rep in reports:
        for r in rep.failures[:2]:
            lines.append(f"{rep.name}: row {r.row + 1} ({r.label}): [{r.score.error.kind}] {r.score.error.message}")
    return lines[:limit]
