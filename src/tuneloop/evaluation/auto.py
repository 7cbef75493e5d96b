"""Auto-evaluation: a tune job with validation data (`--validation-dataset` or
`--validation-split`) evaluates its trained model on it once, at the end of training.

SFT: loss and perplexity on the validation completions (the tokens the training loss covers:
assistant turns), token accuracy, and greedy exact match on up to 64 prompt/completion rows.
DPO: loss, preference accuracy (the share of pairs whose implicit reward prefers chosen) and the
mean reward margin. The numbers go into the job's metrics (`eval_*`), its manifest, MLflow, and
the registered version (`tuneloop registry list`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuneloop.data.staged import count_rows, iter_rows, read_rows

KEEP = {"sft": ("eval_loss", "eval_mean_token_accuracy"),
        "dpo": ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")}
MAX_GENERATE = 64


def evaluate_validation(trainer, tokenizer, technique: str, eval_path: Path) -> dict[str, float]:
    raw = trainer.evaluate()
    out = {k: float(raw[k]) for k in KEEP.get(technique, ()) if isinstance(raw.get(k), (int, float))}
    out["eval_rows"] = float(count_rows(eval_path))
    if technique == "sft" and "eval_loss" in out:
        out["eval_perplexity"] = math.exp(min(out["eval_loss"], 50.0))
        rows = [r for r in iter_rows(eval_path) if isinstance(r.get("prompt"), str) and isinstance(r.get("completion"), str)]
        rows = rows[:MAX_GENERATE]
        if rows:
            from tuneloop.evaluation.quick import exact_match

            longest = max(len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
            answers = _greedy(trainer, tokenizer, [r["prompt"] for r in rows], longest + 4)
            out["eval_exact_match"] = exact_match(answers, [r["completion"] for r in rows])
            out["eval_exact_match_rows"] = float(len(rows))
    return out


def _greedy(trainer, tokenizer, prompts: list[Any], max_new_tokens: int) -> list[str]:
    """Greedy answers from the model being trained, in eval mode (then back to training mode)."""
    from tuneloop.evaluation.quick import generate

    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        return generate(model, tokenizer, prompts, max_new_tokens)
    finally:
        model.train(was_training)


def evaluate_rl_validation(trainer, tokenizer, ctx, default_ref: str | None, eval_path: Path,
                           max_new_tokens: int) -> dict[str, float]:
    """RLVR/RLAIF: greedy answers to up to 64 validation prompts, scored by each row's reward
    (its reward_model, else the job's): eval_reward is the mean over the answers that scored."""
    from tuneloop.evaluation.run import score_answers

    rows = read_rows(eval_path, MAX_GENERATE)
    answers = _greedy(trainer, tokenizer, [r["prompt"] for r in rows], max_new_tokens)
    scored = score_answers(ctx, rows, answers, default_ref=default_ref)
    values = [s.value for scores in scored.values() for s in scores if s.ok]
    failed = sum(1 for scores in scored.values() for s in scores if not s.ok)
    out = {"eval_rows": float(len(rows)), "eval_reward_failed": float(failed)}
    if values:
        out["eval_reward"] = sum(values) / len(values)
    return out
