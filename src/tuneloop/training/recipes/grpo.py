"""The GRPO recipe, for RLVR and RLAIF: reinforcement learning on TRL's GRPOTrainer, LoRA or
full-rank. It trains the model to write completions its reward scores higher, then scores greedy
answers to the validation prompts with each row's reward (eval_reward).

Both techniques are GRPO: each prompt is sampled `num_generations` times, every completion is
scored by its reward (a verifiable reward function for RLVR, an LLM judge for RLAIF; routed per
row by `reward_model`, see tuneloop.rewards), and the policy moves towards the completions that
scored above their group's mean, with an optional KL penalty to the starting model.

What is tuneloop's here: the batch layout, lengths and KL come from the plan (not TRL's defaults:
bf16 and gradient checkpointing are slow on a CPU); the dataset carries each row's extra columns
as one JSON string (so rows may differ in columns and types) and the reward adapter hands them to
the reward functions; rewards that fail are excluded (None) and reported once per distinct error;
a step where too many fail stops the job. The starting model can be a finished job's output: an
adapter keeps training (LoRA, its first state frozen as the KL reference) or is merged (full-rank).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tuneloop.data.staged import iter_rows
from tuneloop.rewards.base import Sample
from tuneloop.rewards.engine import RewardEngine
from tuneloop.training import common
from tuneloop.training.plan import Plan
from tuneloop.training.recipes.base import JobContext, Recipe

log = logging.getLogger(__name__)
ROW_COLUMN = "tuneloop_row"
# kept on the job row while training, for `tuneloop status`
RL_LIVE = ("reward", "reward_std", "kl", "completions/mean_length", "completions/clipped_ratio", "reward/failed")


class GRPORecipe(Recipe):
    """RLVR and RLAIF alike: the technique only picks the job's default reward (its reward
    function or its reward prompt); rows' reward_model override it either way."""

    engine: RewardEngine | None = None

    def setup(self) -> None:
        self.engine = reward_engine(self.ctx)
        self.build(build_trainer, engine=self.engine)

    def validate(self) -> dict[str, float] | None:
        if self.ctx.validation_path is None:
            return None
        from tuneloop.evaluation.auto import evaluate_rl_validation

        return evaluate_rl_validation(self.trainer, self.tokenizer, self.engine.ctx, self.engine.default_ref,
                                      self.ctx.validation_path, self.ctx.plan.max_response_length or 64)

    def summary(self) -> dict[str, float]:
        return self.engine.summary()

    def live_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return {k: metrics[k] for k in RL_LIVE if k in metrics} if "reward" in metrics else {}

    def save_weights(self, out_dir: Path) -> str:
        return save_output(self.trainer, self.tokenizer, out_dir, self.ctx.lora)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.ctx.close()


def reward_engine(ctx: JobContext) -> RewardEngine:
    """The job's rewards: its reward (rows' reward_model override it), judge and evaluators;
    each distinct reward error becomes one event with its traceback."""
    from tuneloop.rewards.functions import RewardContext

    spec, plan = ctx.spec, ctx.plan
    rewards = RewardContext(base_dir=spec.reward_base_dir, judge_model=spec.judge_model,
                            evaluator_lookup=getattr(ctx.store, "get_evaluator_version", None),
                            models_dir=ctx.models_dir, timeout_s=plan.reward_timeout_s or 10.0,
                            unsafe_sandbox=spec.unsafe_reward_sandbox)

    def on_event(level: str, message: str, data: dict[str, Any]) -> None:
        ctx.event(message, level=level, data=data)

    default = spec.reward_function if spec.technique == "rlvr" else spec.reward_prompt
    return RewardEngine(rewards, default, threshold=plan.reward_failure_threshold if plan.reward_failure_threshold
                        is not None else 0.2, on_event=on_event)


class RewardAdapter:
    """The one reward function GRPOTrainer sees: decodes each completion's row and asks the engine."""

    __name__ = "reward"

    def __init__(self, engine: RewardEngine):
        self.engine = engine

    def __call__(self, prompts: list, completions: list, tuneloop_row: list[str], log_metric=None, **_: Any):
        samples = []
        for i, (completion, packed) in enumerate(zip(completions, tuneloop_row)):
            row = json.loads(packed)
            text = completion[0]["content"] if isinstance(completion, list) else str(completion)
            samples.append(Sample(f"{self.engine.step + 1}-{i}", row["prompt"], text, row["row"]))
        rewards = self.engine.score(samples)
        if log_metric is not None:
            for name, value in self.engine.last_metrics.items():
                log_metric(name, value)
        return rewards


def pack_row(row: dict[str, Any]) -> dict[str, Any]:
    """{prompt, tuneloop_row}: the prompt messages for TRL, everything else as one JSON string."""
    extra = {k: v for k, v in row.items() if k != "prompt"}
    return {"prompt": row["prompt"], ROW_COLUMN: json.dumps({"prompt": row["prompt"], "row": extra})}


def _fit_prompt(messages: list[dict[str, str]], tokenizer, limit: int) -> tuple[list[dict[str, str]], bool]:
    """Cut the front of the longest message until the rendered prompt fits `limit` tokens."""
    def length(msgs) -> int:
        if common.has_chat_template(tokenizer):
            return len(tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True,
                                                     return_dict=True)["input_ids"])
        return len(tokenizer("\n".join(m["content"] for m in msgs), add_special_tokens=False)["input_ids"])

    over = length(messages) - limit
    if over <= 0:
        return messages, False
    msgs = [dict(m) for m in messages]
    for _ in range(8):
        longest = max(range(len(msgs)), key=lambda i: len(msgs[i]["content"]))
        ids = tokenizer(msgs[longest]["content"], add_special_tokens=False)["input_ids"]
        msgs[longest]["content"] = tokenizer.decode(ids[min(len(ids), over + 1):])
        over = length(msgs) - limit
        if over <= 0:
            break
    return msgs, True


def load_dataset(data_path: Path, tokenizer, plan: Plan, work_dir: Path):
    from datasets import Dataset

    rows, cut = [], 0
    for row in iter_rows(data_path):
        row["prompt"], was_cut = _fit_prompt(row["prompt"], tokenizer, plan.max_prompt_length or 10**9)
        cut += was_cut
        packed = pack_row(row)
        if not common.has_chat_template(tokenizer):  # a base model without a template gets plain text
            packed["prompt"] = "\n".join(m["content"] for m in row["prompt"])
        rows.append(packed)
    if cut:
        log.warning("%d prompt(s) were cut to max_prompt_length=%d tokens", cut, plan.max_prompt_length)
    return Dataset.from_list(rows), cut


def load_policy(model_dir: str, plan: Plan, lora: bool, work_dir: Path):
    """The model to train and whether it already carries its adapter. An adapter folder is loaded on
    its base: trainable (LoRA) or merged and saved as the start model (full-rank, so the KL
    reference loads the same weights)."""
    adapter_cfg = Path(model_dir) / "adapter_config.json"
    if not adapter_cfg.is_file():
        return common.load_model(model_dir, plan, lora), False
    from peft import PeftModel

    base_path = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
    base = common.load_model(base_path, plan, lora)
    if lora:
        return PeftModel.from_pretrained(base, model_dir, is_trainable=True), True
    merged = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    start = work_dir / "start-model"
    if not (start / "config.json").is_file():
        merged.save_pretrained(str(start), safe_serialization=True)
    return common.load_model(str(start), plan, lora=False), False


def grpo_config(plan: Plan, work_dir: Path):
    from trl import GRPOConfig

    return GRPOConfig(
        **common.training_kwargs(plan, work_dir / "checkpoints"),
        num_generations=plan.num_generations,
        max_completion_length=plan.max_response_length,
        temperature=plan.temperature,
        beta=plan.kl_coef,
        epsilon=plan.clip_ratio,
        remove_unused_columns=False,     # the row column travels to the reward adapter
        disable_dropout=True,            # the same logprobs for the policy and its reference
        log_completions=False,
    )


def build_trainer(*, model_dir: str, data_path: Path, work_dir: Path, plan: Plan, lora: bool,
                  target_modules: list[str] | None, callbacks: list, engine: RewardEngine) -> tuple[Any, Any]:
    from trl import GRPOTrainer

    common.set_threads(plan)
    adapter_dir = Path(model_dir)
    tokenizer = common.load_tokenizer(model_dir if not (adapter_dir / "adapter_config.json").is_file()
                                      else str(adapter_dir))
    tokenizer.padding_side = "left"     # generation pads on the left
    dataset, cut = load_dataset(data_path, tokenizer, plan, work_dir)
    if cut:
        engine.on_event("warn", f"{cut} prompt(s) were longer than max_prompt_length={plan.max_prompt_length} "
                                "tokens and were cut from the front", {"prompts_cut": cut})
    model, has_adapter = load_policy(model_dir, plan, lora, work_dir)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=RewardAdapter(engine),
        args=grpo_config(plan, work_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=common.lora_config(plan, target_modules) if lora and not has_adapter else None,
        callbacks=callbacks,
    )
    common.quiet(trainer)
    return trainer, tokenizer


def save_output(trainer, tokenizer, out_dir: Path, lora: bool) -> str:
    """Like common.save_output, but only the trained adapter (not TRL's frozen "ref" copy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    if lora and "ref" in getattr(model, "peft_config", {}):
        model.save_pretrained(str(out_dir), safe_serialization=True, selected_adapters=["default"])
    else:
        model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(out_dir))
    return "adapter" if lora else "full-model"
