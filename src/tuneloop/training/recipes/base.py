"""The recipe interface every technique follows, after torchtune's FTRecipeInterface, and what all
recipes share.

A recipe is built on a JobContext and run once: `setup` builds the TRL trainer for the technique,
`train` runs it (resuming from the job's last checkpoint) and collects the final metrics,
`validate` scores the trained model on the job's validation rows, and `save` writes the output
folder with its manifest. Validation runs before saving, so its scores go into the manifest and
the model is scored as trained (GRPO's save switches the tokenizer back to right padding).
Registering the output is the runner's part, not the recipe's.

What is shared lives here: the job callback hookup (metrics events, the live progress on the job
row, MLflow, cancel, checkpoint events), resume, the final metrics, and the manifest.

On several processes (`--num-processes`, `--backend ray`) every rank runs the same recipe on a
JobContext with its `rank`; only rank 0 reports (events, the job row, the tracker) and writes the
output; a cancel request rank 0 reads is given to every rank at the same step (distributed.agree),
so they stop together.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneloop.spec import JobSpec, write_spec_file
from tuneloop.training import common, distributed
from tuneloop.training.plan import Plan

if TYPE_CHECKING:
    from tuneloop.store import Store


@dataclass
class JobContext:
    """What a recipe gets from its job: the store it reports to (passed in, never opened here),
    the job row, its spec and plan, the model to start from, and the tracker (MLflow or none).
    `cancelled` turns true when the job callback finds a cancel request. `rank` is this process's
    among the job's (0 when it runs on one); the other ranks get no store (None) and no tracker."""

    store: Store
    job: dict[str, Any]
    spec: JobSpec
    plan: Plan
    model_dir: str                            # what from_pretrained takes: a folder or a Hub id
    lora_targets: list[str] | str | None      # the model's LoRA target modules (None: all linear)
    models_dir: Path                          # where built-in and local judge models live
    tracker: Any                              # log_metrics(step, metrics), see tuneloop.tracking
    cancelled: bool = False
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def job_id(self) -> str:
        return self.job["id"]

    @property
    def work(self) -> Path:
        return Path(self.job["job_dir"])

    @property
    def lora(self) -> bool:
        return self.spec.training_type == "lora"

    @property
    def train_path(self) -> Path:
        return self.work / "data" / "train.jsonl"

    @property
    def validation_path(self) -> Path | None:
        """The staged validation rows, when the job has some."""
        path = self.work / "data" / "validation.jsonl"
        return path if path.is_file() else None

    @property
    def output_dir(self) -> Path:
        return self.work / "output"

    def event(self, message: str, **kwargs: Any) -> None:
        """An event on the job (level=, type=, data= as Store.add_event takes them); rank 0's only."""
        if self.is_main:
            self.store.add_event(self.job_id, message, **kwargs)


@dataclass
class RecipeResult:
    """A finished recipe: where its output is, what kind (adapter, full-model), its metrics."""

    output_dir: Path
    output_type: str
    metrics: dict[str, float]


class Recipe:
    """setup -> train -> validate -> save for one technique; `run` does all four and returns
    None when the job was cancelled while training. Subclasses implement `setup` (setting
    `trainer` and `tokenizer`) and may override `validate`, `summary`, `save_weights`, `close`
    and `live_metrics`."""

    technique: str | None = None    # whose auto-evaluation `validate` runs (sft, dpo)

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.trainer: Any = None
        self.tokenizer: Any = None

    def run(self) -> RecipeResult | None:
        try:
            self.setup()
            metrics = self.train()
            if metrics is None:
                return None
            scores = self.validate()
            if scores is not None:
                metrics.update(scores)
                self.ctx.event("validation: " + ", ".join(f"{k}={v:.4g}" for k, v in scores.items()),
                               type="evaluation", data=scores)
            metrics.update(self.summary())
            self.ctx.tracker.log_metrics(self.trainer.state.global_step,
                                         {k: v for k, v in metrics.items() if not k.startswith("final_")})
            return self.save(metrics)
        finally:
            self.close()

    # ---- the interface ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build `self.trainer` and `self.tokenizer` (usually through `build`)."""
        raise NotImplementedError

    def train(self) -> dict[str, float] | None:
        """Train from the last checkpoint (if any) to the planned steps; the final metrics, or
        None when a cancel request stopped training."""
        ctx, plan = self.ctx, self.ctx.plan
        resume = common.last_checkpoint(ctx.work / "checkpoints")
        ctx.event(f"training started on {plan.device} ({plan.precision}), {plan.total_steps} steps"
                  + (f"; resuming from {Path(resume).name}" if resume else ""),
                  data={"resume_from": resume})
        started = time.monotonic()
        try:
            result = self.trainer.train(resume_from_checkpoint=resume)
        except Exception as e:   # a full disk mid-save: drop the half-written checkpoint, say what is kept
            full = common.disk_full(e, ctx.work / "checkpoints")     # before the cleanup frees space again
            kept = common.last_checkpoint(ctx.work / "checkpoints")
            if not full:
                raise
            raise OSError(errno.ENOSPC, f"No space left on device while saving under {ctx.work}; the last "
                                        f"complete checkpoint is {Path(kept).name if kept else 'none'} (free space, "
                                        "then resume the job to go on from it)") from e
        if ctx.cancelled:
            return None
        metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
        for entry in reversed(self.trainer.state.log_history):  # last logged technique metrics (e.g. DPO accuracies)
            if "loss" in entry:
                metrics.update({f"final_{k}": float(v) for k, v in entry.items()
                                if isinstance(v, (int, float)) and k not in ("epoch", "step")})
                break
        metrics["wall_s"] = round(time.monotonic() - started, 2)
        return metrics

    def validate(self) -> dict[str, float] | None:
        """Scores on the validation rows (None: no validation data): SFT's and DPO's auto-evaluation
        by `technique`; GRPO overrides it."""
        if self.ctx.validation_path is None or self.technique is None:
            return None
        from tuneloop.evaluation.auto import evaluate_validation

        return evaluate_validation(self.trainer, self.tokenizer, self.technique, self.ctx.validation_path)

    def save(self, metrics: dict[str, float]) -> RecipeResult:
        """The output folder: the weights, tuneloop_spec.json and manifest.json (spec, plan, data,
        metrics, versions); both spec copies are the job's one spec record (spec.spec_record)."""
        ctx, job = self.ctx, self.ctx.job
        out_dir = ctx.output_dir
        if not ctx.is_main:   # rank 0 writes the output; the others' result is not used
            if ctx.plan.sharding == "fsdp":   # (the others give it their shards of the weights)
                self.save_weights(out_dir)
            return RecipeResult(out_dir, "adapter" if ctx.lora else "full-model", metrics)
        output_type = self.save_weights(out_dir)
        record = job["spec"]                    # as submit recorded it: the row and the job's spec.json
        write_spec_file(out_dir / "tuneloop_spec.json", record)
        manifest = {
            "job": ctx.job_id, "spec": record, "plan": job["plan"], "base_model": ctx.spec.model,
            "base_model_path": ctx.model_dir, "output_type": output_type,
            "dataset": {"source": ctx.spec.dataset, "sha256": job["dataset_sha256"], "rows": job["dataset_rows"]},
            "metrics": metrics, "versions": common.versions(),
        }
        common.write_json(out_dir / "manifest.json", manifest)
        return RecipeResult(out_dir, output_type, metrics)

    # ---- what a technique may change ------------------------------------------------------------------
    def build(self, build_trainer: Callable[..., tuple[Any, Any]], **extra: Any) -> None:
        """Set `trainer` and `tokenizer` from a technique's build_trainer, on the job's model, data,
        plan and callbacks (`extra`: the technique's own arguments)."""
        c = self.ctx
        self.trainer, self.tokenizer = build_trainer(model_dir=c.model_dir, data_path=c.train_path, work_dir=c.work,
                                                     plan=c.plan, lora=c.lora, target_modules=c.lora_targets,
                                                     callbacks=self.callbacks(), **extra)

    def save_weights(self, out_dir: Path) -> str:
        """Write the adapter or full model and its tokenizer; return the output type."""
        return common.save_output(self.trainer, self.tokenizer, out_dir, self.ctx.lora)

    def summary(self) -> dict[str, float]:
        """Technique metrics added at the end (GRPO: the rewards' counts)."""
        return {}

    def live_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics kept on the job row while training, for `tuneloop status` (GRPO: the reward)."""
        return {}

    def close(self) -> None:
        """Release what setup opened, also after a failure."""

    # ---- the job callback -------------------------------------------------------------------------------
    def callbacks(self) -> list:
        return [common.make_callback(self.on_metrics, self.should_stop, self.on_save)]

    def on_metrics(self, step: int, total: int, metrics: dict[str, float]) -> None:
        ctx = self.ctx
        if not ctx.is_main:
            return
        loss = metrics.get("loss")
        live = self.live_metrics(metrics)
        ctx.store.update_job(ctx.job_id, step=step, total_steps=total, **({"loss": loss} if loss is not None else {}),
                             **({"metrics": live} if live else {}))
        ctx.event(f"step {step}/{total}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()),
                  type="metrics", data={"step": step, **metrics})
        ctx.tracker.log_metrics(step, metrics)

    def should_stop(self) -> bool:
        """Asked at every step's end: rank 0 looks the cancel request up (at most once a second),
        and every rank gets its answer at the same step."""
        ctx = self.ctx
        asked = ctx.cancelled
        now = time.monotonic()
        if ctx.is_main and not asked and now - getattr(self, "_last_check", 0.0) >= 1.0:
            self._last_check = now
            current = ctx.store.get_job(ctx.job_id)
            asked = bool(current and current["cancel_requested"])
        ctx.cancelled = distributed.agree(asked) if ctx.plan.num_processes > 1 else asked
        return ctx.cancelled

    def on_save(self, step: int) -> None:
        self.ctx.event(f"checkpoint saved at step {step}", data={"step": step})
