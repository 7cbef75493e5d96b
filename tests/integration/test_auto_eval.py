"""Auto-evaluation: a tune job with validation data evaluates the trained model on it at the end,
and the numbers equal ones computed by hand from the saved output (plain transformers + peft):
SFT loss over the assistant tokens, perplexity, greedy exact match; DPO preference accuracy and
reward margin against the base model. The numbers reach the registered version."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import DEMO_DATA, write_jsonl

pytestmark = pytest.mark.slow
SFT = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]
DPO = [json.loads(line) for line in (DEMO_DATA / "dpo.jsonl").read_text().splitlines()]


def _logps(model, tok, prompt: str, answer: str) -> tuple[float, int, list[float]]:
    """Sum of log p(answer tokens | chat prompt), their count, and each token's log p."""
    import torch

    p_ids = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                    add_generation_prompt=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                   tokenize=True, return_dict=True)["input_ids"]
    assert full[:len(p_ids)] == p_ids
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    targets = full[len(p_ids):]
    per = [logp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(targets)]
    return sum(per), len(per), per


def test_sft_validation_loss_and_exact_match_equal_hand_computed_values(train, home, tmp_path, models_dir):
    from tuneloop.evaluation.quick import generate, load_for_eval
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.store import open_store
    from tuneloop.settings import load_settings

    val = [SFT[0]]  # one row: the loss is the mean over its assistant tokens, whatever the batching
    job = train("sft", write_jsonl(tmp_path / "train.jsonl", SFT), validation_dataset=str(
        write_jsonl(tmp_path / "val.jsonl", val)), hyperparameters={"max_steps": 30})
    m = job["metrics"]
    model, tok = load_for_eval(str(ensure_builtin("tuneloop/tiny-qwen3", models_dir)), job["output_path"])
    total, n, _ = _logps(model, tok, val[0]["prompt"], val[0]["completion"])
    print(f"SFT validation: eval_loss {m['eval_loss']:.5f}, by hand {-total / n:.5f} over {n} tokens")
    assert m["eval_loss"] == pytest.approx(-total / n, rel=1e-3, abs=1e-4)
    assert m["eval_perplexity"] == pytest.approx(math.exp(m["eval_loss"]), rel=1e-6)
    answer = generate(model, tok, [val[0]["prompt"]], max_new_tokens=24)[0]
    assert m["eval_exact_match"] == float(answer.strip() == val[0]["completion"].strip()) and m["eval_rows"] == 1
    [pkg] = open_store(load_settings().database_url).list_packages()
    assert pkg["metrics"]["eval_loss"] == m["eval_loss"]


def test_dpo_validation_preference_accuracy_and_margin_equal_hand_computed_values(train, tmp_path, models_dir):
    from tuneloop.evaluation.quick import load_for_eval
    from tuneloop.models.builtin import ensure_builtin

    val = DPO[:4]
    job = train("dpo", write_jsonl(tmp_path / "train.jsonl", DPO), validation_dataset=str(
        write_jsonl(tmp_path / "val.jsonl", val)), hyperparameters={"max_steps": 6})
    m = job["metrics"]
    base_dir = str(ensure_builtin("tuneloop/tiny-qwen3", models_dir))
    policy, tok = load_for_eval(base_dir, job["output_path"])
    ref, _ = load_for_eval(base_dir)
    beta = job["plan"]["beta"]
    margins = []
    for row in val:
        chosen = _logps(policy, tok, row["prompt"], row["chosen"])[0] - _logps(ref, tok, row["prompt"], row["chosen"])[0]
        rejected = (_logps(policy, tok, row["prompt"], row["rejected"])[0]
                    - _logps(ref, tok, row["prompt"], row["rejected"])[0])
        margins.append(beta * (chosen - rejected))
    accuracy = sum(x > 0 for x in margins) / len(margins)
    print(f"DPO validation: accuracy {m['eval_rewards/accuracies']:.3f} (hand {accuracy:.3f}), margin "
          f"{m['eval_rewards/margins']:.4f} (hand {sum(margins) / len(margins):.4f})")
    assert m["eval_rewards/accuracies"] == pytest.approx(accuracy)
    assert m["eval_rewards/margins"] == pytest.approx(sum(margins) / len(margins), rel=1e-3, abs=1e-4)
