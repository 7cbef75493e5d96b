"""A training step's rewards: route each sample to its reward (the row's `reward_model`, else the
job's), run them, keep what failed out of the step, and stop the job when too much fails.

    engine = RewardEngine(ctx, default_ref="builtin:exact_match", threshold=0.2, on_event=print)
    rewards = engine.score(samples)        # floats, None for excluded samples
    engine.last_metrics                    # {"reward/failed": 0.0, "<metric>": mean, ...}

Every distinct error (reward, kind, message) is reported once through `on_event` with its
traceback and counted afterwards; a step where more than `threshold` of the samples failed raises
RewardFailure naming the reward and its first error.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Callable

from tuneloop.errors import TuneloopError
from tuneloop.rewards.base import Sample, Score
from tuneloop.rewards.functions import RewardContext

log = logging.getLogger(__name__)
MAX_ERROR_EVENTS = 50
DEFAULT_THRESHOLD = 0.2


class RewardFailure(TuneloopError):
    """More than the threshold of a step's rewards failed: the job stops."""

    exit_code = 2
    code = "reward_failed"


class RewardEngine:
    def __init__(self, ctx: RewardContext, default_ref: str | None, *, threshold: float = DEFAULT_THRESHOLD,
                 on_event: Callable[[str, str, dict[str, Any]], None] | None = None):
        self.ctx, self.default_ref, self.threshold = ctx, default_ref, threshold
        self.on_event = on_event or (lambda level, message, data: log.warning(message))
        self.errors: dict[tuple[str, str, str], int] = {}
        self.suppressed = 0
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.seconds = 0.0
        self.totals = {"samples": 0, "failed": 0}

    def ref_of(self, s: Sample) -> str | None:
        ref = s.row.get("reward_model")
        return ref if isinstance(ref, str) and ref.strip() else self.default_ref

    def score_all(self, samples: list[Sample]) -> list[Score]:
        """Scores in sample order; samples go to their reward in groups."""
        started = time.perf_counter()
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[self.ref_of(s)].append(i)
        out: list[Score | None] = [None] * len(samples)
        self._names: dict[int, str] = {}
        self._judged = False
        for ref, idx in groups.items():
            if ref is None:
                scores = [Score.failed("config", "no reward: the row has no reward_model and the job none")] * len(idx)
                name = "(none)"
            else:
                fn = self.ctx.resolve(ref)
                name = fn.name
                self._judged = self._judged or hasattr(fn, "judge")
                batch = [samples[i] for i in idx]
                for s in batch:  # the reference is routing, not data for the reward
                    s.row.pop("reward_model", None)
                try:
                    scores = fn.score(batch)
                except Exception as e:  # noqa: BLE001 - a reward that raises fails its samples, not the trainer
                    import traceback

                    scores = [Score.failed("exception", f"{type(e).__name__}: {e}", traceback.format_exc())] * len(idx)
            for i, sc in zip(idx, scores):
                out[i] = sc
                self._names[i] = name
        self.seconds += time.perf_counter() - started
        return [s if s is not None else Score.failed("crash", "no result") for s in out]

    def score(self, samples: list[Sample]) -> list[float | None]:
        """One step: floats (None = excluded), events for new errors, metrics, and the threshold check."""
        self.step += 1
        scores = self.score_all(samples)
        failed = [(i, s) for i, s in enumerate(scores) if not s.ok]
        for i, s in failed:
            self._record(self._names.get(i, "?"), samples[i], s)
        n = len(scores)
        self.totals["samples"] += n
        self.totals["failed"] += len(failed)
        sums: dict[str, list[float]] = defaultdict(list)
        for s in scores:
            for k, v in s.metrics.items():
                sums[k].append(v)
        self.last_metrics = {k: sum(v) / len(v) for k, v in sums.items()}
        self.last_metrics["reward/failed"] = len(failed) / n if n else 0.0
        unparseable = sum(1 for _, s in failed if s.error and s.error.kind == "unparseable")
        if unparseable or self._judged:
            self.last_metrics["judge/unparseable"] = float(unparseable)
        if n and len(failed) / n > self.threshold:
            i, first = failed[0]
            name = self._names.get(i, "?")
            raise RewardFailure(
                f"Reward {name} failed on {len(failed)} of {n} samples in step {self.step} (more than the "
                f"{self.threshold:.0%} threshold); first error: {first.error.message}",
                hint="Check it on sample rows with: tuneloop evaluators verify REF --dataset FILE",
                details=[first.error.traceback.strip().splitlines()[-1]] if first.error.traceback else [])
        return [s.value if s.ok else None for s in scores]

    def _record(self, name: str, sample: Sample, s: Score) -> None:
        key = (name, s.error.kind, s.error.message[:200])
        if key in self.errors:
            self.errors[key] += 1
            return
        if len(self.errors) >= MAX_ERROR_EVENTS:
            self.suppressed += 1
            return
        self.errors[key] = 1
        level = "warn" if s.error.kind == "unparseable" else "error"
        self.on_event(level, f"reward {name} failed ({s.error.kind}) on sample {sample.id}: {s.error.message}",
                      {"reward": name, "kind": s.error.kind, "error": s.error.message, "traceback": s.error.traceback,
                       "sample_id": sample.id, "completion": sample.completion[:500], "step": self.step})

    def summary(self) -> dict[str, Any]:
        return {"reward_samples": self.totals["samples"], "reward_failed": self.totals["failed"],
                "reward_distinct_errors": len(self.errors), "reward_seconds": round(self.seconds, 3)}
