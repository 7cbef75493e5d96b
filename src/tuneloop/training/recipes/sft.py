"""The SFT recipe: supervised fine-tuning on TRL's SFTTrainer, LoRA or full-rank. It trains the
model to answer each staged prompt with its completion (or each conversation's assistant turns),
then scores it on the validation rows: loss, perplexity, token accuracy, greedy exact match.

The rows are tokenized here, by `tuneloop.training.tokenize` (the same function evaluation
scores with), and TRL gets a pre-tokenized dataset: `input_ids` and `assistant_masks`, the mask
column TRL always turns into labels (-100 off the mask), so TRL neither re-renders nor re-masks.
Chat models train through their chat template, whatever it is (with or without `{% generation %}`
markers): a {prompt, completion} row becomes a user turn and an assistant turn, a {messages} row
(multi-turn, system prompts kept) trains on every assistant turn, each through its end-of-turn
token. A base model without a template trains on plain prompt + completion + eos, loss on the
completion and eos, and the job says so in an event. Rows are cut to the plan's max_length with
their masks; rows left with nothing to train are dropped and counted in the same event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tuneloop.data.staged import iter_rows
from tuneloop.errors import DatasetError
from tuneloop.training import common
from tuneloop.training.plan import Plan
from tuneloop.training.recipes.base import Recipe
from tuneloop.training.tokenize import tokenize_rows


class SFTRecipe(Recipe):
    technique = "sft"

    def setup(self) -> None:
        self.build(build_trainer, eval_path=self.ctx.validation_path, report=self.ctx.event)


def tokenized(tokenizer, path: Path, max_length: int | None, name: str):
    """A staged SFT file as TRL's pre-tokenized dataset, and what tokenizing it did."""
    from datasets import Dataset

    columns, summary = tokenize_rows(tokenizer, iter_rows(path), max_length, name)
    if not summary.rows:
        raise DatasetError(f"{name}: no row has a trained token within max_length {max_length} "
                           f"({summary.dropped} rows, each cut before its first assistant token).",
                           hint="Raise --max-seq-length or shorten the prompts.", param="max_length")
    return Dataset.from_dict(columns), summary


def build_trainer(*, model_dir: str, data_path: Path, work_dir: Path, plan: Plan, lora: bool,
                  target_modules: list[str] | None, callbacks: list, eval_path: Path | None = None,
                  report: Callable[..., None] | None = None) -> tuple[Any, Any]:
    from trl import SFTConfig, SFTTrainer

    common.set_threads(plan)
    tokenizer = common.load_tokenizer(model_dir)
    dataset, summary = tokenized(tokenizer, data_path, plan.max_length, "train.jsonl")
    reports = [(summary, "training data")]
    eval_dataset = None
    if eval_path is not None:  # validation rows, tokenized the same way; evaluated once at the end
        eval_dataset, eval_summary = tokenized(tokenizer, eval_path, plan.max_length, "validation.jsonl")
        reports.append((eval_summary, "validation data"))
    for s, what in reports:
        line = s.line(what, plan.max_length)
        common.log.info(line)
        if report is not None:
            report(line, data={"rows": s.rows, "dropped": s.dropped, "trained_tokens": s.trained_tokens,
                               "span_methods": s.methods, "chat_template": s.chat_template})
    config = SFTConfig(
        **common.training_kwargs(plan, work_dir / "checkpoints"),
        max_length=plan.max_length,   # already cut; TRL's keep_start truncation cuts nothing more
        completion_only_loss=False,   # the mask is assistant_masks, applied whatever this says
        assistant_only_loss=False,    # not TRL's {% generation %} path: the masks are ours
        packing=False,
        dataset_num_proc=None,
    )
    common.fsdp_on_cpu(plan)
    trainer = SFTTrainer(
        model=common.load_model(model_dir, plan, lora),
        args=config,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=common.lora_config(plan, target_modules) if lora else None,
        callbacks=callbacks,
    )
    common.quiet(trainer)
    return trainer, tokenizer
