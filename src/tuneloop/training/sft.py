"""Supervised fine-tuning on TRL's SFTTrainer, LoRA or full-rank.

Chat models train through their chat template: a staged {prompt, completion} row becomes a user
turn and an assistant turn, and TRL's completion mask puts the loss on the assistant turn only,
so the tuned model answers the same way behind a chat endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.training import common
from tuneloop.training.plan import Plan


def to_conversational(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "completion": [{"role": "assistant", "content": row["completion"]}]}


def build_trainer(*, model_dir: str, data_path: Path, work_dir: Path, plan: Plan, lora: bool,
                  target_modules: list[str] | None, callbacks: list) -> tuple[Any, Any]:
    from trl import SFTConfig, SFTTrainer

    common.set_threads(plan)
    tokenizer = common.load_tokenizer(model_dir)
    dataset = common.load_staged(data_path, work_dir / "cache")
    if common.has_chat_template(tokenizer):
        dataset = dataset.map(to_conversational, remove_columns=dataset.column_names)
    config = SFTConfig(
        **common.training_kwargs(plan, work_dir / "checkpoints"),
        max_length=plan.max_length,
        completion_only_loss=True,
        packing=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=common.load_model(model_dir, plan, lora),
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=common.lora_config(plan, target_modules) if lora else None,
        callbacks=callbacks,
    )
    common.quiet(trainer)
    return trainer, tokenizer
