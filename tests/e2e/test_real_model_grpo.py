"""GRPO on a real model with default settings: `.venv/bin/python -m pytest tests/e2e/test_real_model_grpo.py -x -q`.

SmolLM2-135M-Instruct (the real GGUF, fixture `real_gguf`), through the CLI with no hyperparameter
flags: `tuneloop tune --technique rlvr` on 16 capital questions with a verifiable reward (the right
city in at most 3 words scores 1, falling to 0 at 8 words; no city, 0). The base model knows these
capitals but answers in a sentence ("The capital of France is Paris.": 6 words, 0.4), so it scores
partly; the planner's defaults (learning rate, passes, batch, lengths) must raise the mean reward of
answers to 8 held-out questions it never trained on: 8 answers to each, sampled as in training (the
plan's temperature and response length) with a fixed seed, base and tuned alike. Sampled, not
greedy: 16 steps move the distribution (fewer rambling answers) before they move its mode, which
stays "The capital of X is Y." (measured: see README "Reinforcement learning").
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, write_jsonl

pytestmark = pytest.mark.slow

TRAIN = [("Russia", "Moscow"), ("China", "Beijing"), ("Greece", "Athens"), ("England", "London"),
         ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Sweden", "Stockholm"), ("Peru", "Lima"),
         ("Thailand", "Bangkok"), ("Finland", "Helsinki"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
         ("Turkey", "Ankara"), ("Iran", "Tehran"), ("South Korea", "Seoul"), ("Argentina", "Buenos Aires")]
# held out: never trained on; capitals the base model names in its sentence answers
HELD = [("France", "Paris"), ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Canada", "Ottawa"),
        ("Norway", "Oslo"), ("Kenya", "Nairobi"), ("Cuba", "Havana")]
REWARD = '''
def score(completion, answer):
    """1 for the right city in at most 3 words, falling to 0 at 8 words; 0 without the city."""
    if answer.lower() not in completion.lower():
        return 0.0
    n = len(completion.split())
    return 1.0 if n <= 3 else max(0.0, 1.0 - (n - 3) / 5)
'''


PLAN_KEYS = ("learning_rate", "total_steps", "epochs", "global_batch", "num_generations", "temperature",
             "max_response_length", "kl_coef")


def sampled_rewards(model_dir, adapter, countries, plan, samples=8, seed=0) -> dict:
    """`samples` answers to each question, sampled at the plan's temperature and response length with
    a fixed seed through the model's chat template, and their rewards."""
    import torch

    from tuneloop.evaluation.quick import load_for_eval

    model, tok = load_for_eval(str(model_dir), adapter)
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows(countries)]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**batch, do_sample=True, temperature=plan["temperature"], top_p=1.0, top_k=0,
                             max_new_tokens=plan["max_response_length"], num_return_sequences=samples,
                             pad_token_id=tok.pad_token_id)
    answers = [tok.decode(o[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for o in out]
    score = {}
    exec(REWARD, score)
    return {"answers": answers,
            "rewards": [score["score"](a, countries[i // samples][1]) for i, a in enumerate(answers)]}


def rows(countries):
    return [{"prompt": [{"role": "user", "content": f"What is the capital of {c}? Answer in a few words."}],
             "answer": city} for c, city in countries]


def test_grpo_defaults_raise_the_held_out_reward(home, real_gguf, real_model_folder, tmp_path):
    (tmp_path / "terse.py").write_text(REWARD)
    reward = f"{tmp_path}/terse.py:score"
    train = write_jsonl(tmp_path / "train.jsonl", rows(TRAIN))
    tune = ("tune", "--technique", "rlvr", "--dataset", str(train), "--model", str(real_gguf),
            "--reward-function", reward)
    dry = cli(*tune, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["plan"]
    assert plan["learning_rate"] > 1e-4 and plan["total_steps"] >= 16 and plan["max_response_length"] <= 32, plan

    r = cli(*tune, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    [job] = json.loads(cli("status", "--json").stdout)
    assert job["state"] == "completed", job
    tuned = sampled_rewards(real_model_folder, job["output_path"], HELD, plan)
    base = sampled_rewards(real_model_folder, None, HELD, plan)
    before, after = sum(base["rewards"]) / len(base["rewards"]), sum(tuned["rewards"]) / len(tuned["rewards"])
    report = {"before": before, "after": after, "plan": {k: plan[k] for k in PLAN_KEYS},
              "base_answers": base["answers"][::8], "tuned_answers": tuned["answers"][::8]}
    print(json.dumps(report, indent=1))
    assert after >= before + 0.1, report    # measured: see README "Reinforcement learning"
