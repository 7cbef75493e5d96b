"""The evaluator service: register reward functions and reward prompts as versioned assets, and
verify any reward on sample rows of a dataset. The CLI (`tuneloop evaluators ...`) and the SDK
(`Evaluator`) call this; nothing here prints.

    svc = open_services().evaluators           # EvaluatorService(store, settings)
    row, added = svc.create("colour-match", "rewards.py:score", type="reward-function")
    result = svc.verify("colour-match", "data/train.jsonl", samples=8)
    result.ok, result.reports[0].results[0].score.value
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.rewards.assets import EvaluatorAssets
from tuneloop.rewards.functions import RefError, parse_ref


@dataclass
class VerifyOutcome:
    ref: str
    technique: str
    rows: int
    reports: list[Any]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "technique": self.technique, "rows": self.rows, "ok": self.ok,
                "rewards": [r.to_dict() for r in self.reports]}


class EvaluatorService:
    def __init__(self, store, settings):
        self.store, self.settings = store, settings
        self.assets = EvaluatorAssets(store, settings)

    def create(self, name: str, source: str, type: str | None = None, description: str | None = None):
        return self.assets.create(name, type, source, description)

    def technique_of(self, ref: str) -> str:
        """rlaif for reward prompts (and evaluators of that type), else rlvr."""
        try:
            kind = parse_ref(ref).kind
        except RefError as e:
            raise ValidationError(str(e), param="reward") from None
        if kind == "evaluator":
            row = self.store.get_evaluator_version(ref)
            if row is None:
                raise ValidationError(f"No evaluator named {ref!r}, and it is not a file, module, URL or built-in.",
                                      hint="List evaluators with: tuneloop evaluators list", param="reward")
            return "rlaif" if row["type"] == "reward-prompt" else "rlvr"
        return "rlaif" if kind == "prompt" else "rlvr"

    def verify(self, ref: str, dataset: str, *, samples: int = 8, judge_model: str | None = None,
               completions: list[str] | None = None, column_map: str | None = None, timeout_s: float = 10.0,
               base_dir: str | None = None) -> VerifyOutcome:
        """Run `ref` on the first `samples` rows of `dataset` (staged like a tune job's data; the
        rows' own reward_model is replaced by `ref`). A local judge model is loaded and run."""
        from tuneloop.data.stage import stage_dataset
        from tuneloop.rewards.functions import RewardContext
        from tuneloop.data.staged import read_rows
        from tuneloop.rewards.verify import verify_rows

        technique = self.technique_of(ref)
        if technique == "rlaif" and not judge_model:
            raise ValidationError("Verifying a reward prompt needs a judge: pass --judge-model (a catalog model, a "
                                  "model folder, or openai:MODEL@BASE_URL).", param="judge_model")
        tmp = Path(tempfile.mkdtemp(prefix="tuneloop-verify-"))
        try:
            staged = stage_dataset(dataset, technique, tmp / "rows.jsonl", column_map=column_map, take=samples,
                                   reward_model=ref, lookup=self.store.get_dataset_version,
                                   command=f"tuneloop evaluators verify {shlex.quote(ref)}")
            rows = [{**row, "reward_model": ref} for row in read_rows(staged.path, samples)]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with RewardContext(base_dir=base_dir, judge_model=judge_model, evaluator_lookup=self.store.get_evaluator_version,
                           models_dir=self.settings.models_dir, timeout_s=timeout_s) as ctx:
            reports = verify_rows(ctx, rows, samples=samples, completions=completions)
        return VerifyOutcome(ref, technique, len(rows), reports)
