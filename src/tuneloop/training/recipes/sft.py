"""The SFT recipe: supervised fine-tuning on TRL's SFTTrainer, LoRA or full-rank. It trains the
model to answer each staged prompt with its completion (or each conversation's assistant turns),
then scores it on the validation rows: loss, perplexity, token accuracy, greedy exact match.

Chat models train through their chat template: a staged {prompt, completion} row becomes a user
turn and an assistant turn, and TRL's completion mask puts the loss on the assistant turn only,
so the tuned model answers the same way behind a chat endpoint. A staged {messages} file (multi-turn
conversations, system prompts kept) trains as conversations with the loss on every assistant turn
and nothing else (TRL's assistant_only_loss, through the template's {% generation %} markers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.training import common
from tuneloop.training.plan import Plan
from tuneloop.training.recipes.base import Recipe


class SFTRecipe(Recipe):
    technique = "sft"

    def setup(self) -> None:
        self.build(build_trainer, eval_path=self.ctx.validation_path)



def to_conversational(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "completion": [{"role": "assistant", "content": row["completion"]}]}


def build_trainer(*, model_dir: str, data_path: Path, work_dir: Path, plan: Plan, lora: bool,
                  target_modules: list[str] | None, callbacks: list, eval_path: Path | None = None) -> tuple[Any, Any]:
    from trl import SFTConfig, SFTTrainer

    common.set_threads(plan)
    tokenizer = common.load_tokenizer(model_dir)
    dataset = common.load_staged(data_path, work_dir / "cache")
    conversations = "messages" in dataset.column_names  # staging makes a file all messages or all prompt/completion
    if conversations and not common.has_chat_template(tokenizer):
        raise ValueError(f"{model_dir} has no chat template, so multi-turn 'messages' data cannot be rendered; "
                         "use a chat model or prompt/completion rows")
    if common.has_chat_template(tokenizer) and not conversations:
        dataset = dataset.map(to_conversational, remove_columns=dataset.column_names)
    eval_dataset = None
    if eval_path is not None:  # validation rows, prepared the same way; evaluated once at the end
        eval_dataset = common.load_staged(eval_path, work_dir / "cache")
        if common.has_chat_template(tokenizer) and "messages" not in eval_dataset.column_names:
            eval_dataset = eval_dataset.map(to_conversational, remove_columns=eval_dataset.column_names)
    config = SFTConfig(
        **common.training_kwargs(plan, work_dir / "checkpoints"),
        max_length=plan.max_length,
        completion_only_loss=None if conversations else True,
        assistant_only_loss=conversations,
        packing=False,
        dataset_num_proc=None,
    )
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
