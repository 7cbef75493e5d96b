"""The evaluator service: reward functions and reward prompts as named, versioned assets
(SageMaker V3's `Evaluator.create(name, type=RewardFunction|RewardPrompt, source)`), usable
anywhere a reward reference goes as `name` (the latest version) or `name@vN`, and verifying any
reward on sample rows of a dataset. The CLI (`tuneloop evaluators ...`) and the SDK
(`Evaluator`) call this; nothing here prints.

    svc = open_services().evaluators           # EvaluatorService(store, settings)
    row, added = svc.create("colour-match", "rewards.py:score", type="reward-function")
    row["ref"]                                 # "colour-match@v1"
    result = svc.verify("colour-match", "data/train.jsonl", samples=8)
    result.ok, result.reports[0].results[0].score.value

A version freezes what it runs (rewards/assets.py decides what): a Python file, grader JSON or
prompt template is copied to `$TUNELOOP_HOME/evaluators/<name>/v<N>/`, so editing the original
later does not change it. Creating the same content again returns the existing version;
different content becomes the next version (store/assets.py numbers them).
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.data.stage import stage_dataset
from tuneloop.data.staged import read_rows
from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.rewards.assets import check_name, frozen_content, materialize, normalize_type
from tuneloop.rewards.functions import RefError, RewardContext, parse_ref
from tuneloop.rewards.verify import verify_rows


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
        self.assets = store.evaluators             # store/assets.py: versions keyed by content

    def folder(self, name: str, version: int) -> Path:
        return self.settings.home / "evaluators" / name / f"v{version}"

    # ---- versions -------------------------------------------------------------------------------
    def create(self, name: str, source: str, type: str | None = None, description: str | None = None,
               base_dir: Path | None = None) -> tuple[dict[str, Any], bool]:
        """Register `source` as the next version of `name` (the same content: the existing one);
        returns (the version row, whether it was added)."""
        check_name(name)
        kind_type = normalize_type(type, source)
        existing = self.assets.head(name)
        if existing is not None and existing["type"] != kind_type:
            raise ValidationError(f"Evaluator {name} is a {existing['type']}; a new version cannot be a {kind_type}.",
                                  hint="Pick another name.", param="type")
        frozen = materialize(kind_type, source, Path(base_dir or Path.cwd()))
        row, added = self.assets.add(name, {"type": kind_type, "kind": frozen.kind, "source": source,
                                            "target": frozen.target, "sha256": frozen.sha256},
                                     head={"type": kind_type, "description": description})
        if added and frozen.files:  # freeze the content next to the version, then point the version at it
            dest = self.folder(name, row["version"])
            dest.mkdir(parents=True, exist_ok=True)
            for filename, data in frozen.files.items():
                (dest / filename).write_bytes(data)
            self.assets.update(row["id"], target=frozen.placed(dest))
            row = self.assets.get(row["ref"])
        return row, added

    def get(self, ref: str) -> dict[str, Any]:
        row = self.assets.get(ref)
        if row is None:
            raise NotFoundError(f"No evaluator {ref!r}.", hint="List them with: tuneloop evaluators list",
                                param="evaluator")
        return row

    def versions(self, name: str) -> list[dict[str, Any]]:
        rows = self.assets.list(name)
        if not rows:
            raise NotFoundError(f"No evaluator {name!r}.", hint="List them with: tuneloop evaluators list",
                                param="evaluator")
        return rows

    def list(self) -> list[dict[str, Any]]:
        """The latest version of each evaluator."""
        return self.assets.latest()

    @staticmethod
    def content(row: dict[str, Any]) -> str | None:
        """The frozen file's text (code, grader JSON or prompt), when the version has one."""
        return frozen_content(row)

    # ---- verify ---------------------------------------------------------------------------------

    def technique_of(self, ref: str) -> str:
        """rlaif for reward prompts (and evaluators of that type), else rlvr."""
        try:
            kind = parse_ref(ref).kind
        except RefError as e:
            raise ValidationError(str(e), param="reward") from None
        if kind == "evaluator":
            row = self.assets.get(ref)
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
