"""The DPO recipe: direct preference optimisation on TRL's DPOTrainer, LoRA or full-rank. It trains
the model to prefer each staged pair's chosen answer over its rejected one, then scores it on the
validation pairs: loss, preference accuracy, reward margin.

For chat models each staged {prompt, chosen, rejected} row becomes a user turn and two candidate
assistant turns. With LoRA the reference model is the base with adapters switched off (no copy);
full-rank keeps a frozen reference copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.training import common
from tuneloop.training.plan import Plan
from tuneloop.training.recipes.base import Recipe


class DPORecipe(Recipe):
    technique = "dpo"

    def setup(self) -> None:
        self.build(build_trainer, eval_path=self.ctx.validation_path)



def to_conversational(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def build_trainer(*, model_dir: str, data_path: Path, work_dir: Path, plan: Plan, lora: bool,
                  target_modules: list[str] | None, callbacks: list, eval_path: Path | None = None) -> tuple[Any, Any]:
    from trl import DPOConfig, DPOTrainer

    common.set_threads(plan)
    tokenizer = common.load_tokenizer(model_dir)
    dataset = common.load_staged(data_path, work_dir / "cache")
    if common.has_chat_template(tokenizer):
        dataset = dataset.map(to_conversational, remove_columns=dataset.column_names)
    eval_dataset = None
    if eval_path is not None:  # validation pairs, prepared the same way; evaluated once at the end
        eval_dataset = common.load_staged(eval_path, work_dir / "cache")
        if common.has_chat_template(tokenizer):
            eval_dataset = eval_dataset.map(to_conversational, remove_columns=eval_dataset.column_names)
    config = DPOConfig(
        **common.training_kwargs(plan, work_dir / "checkpoints"),
        beta=plan.beta,
        max_length=plan.max_length,
    )
    trainer = DPOTrainer(
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
