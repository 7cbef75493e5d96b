"""Multi-turn OpenAI `messages` data trains through the chat template with the loss on the
assistant turns: the tuned tiny model answers both turns of each trained conversation."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_DATA, write_jsonl

pytestmark = pytest.mark.slow

SFT = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]
SYSTEM = {"role": "system", "content": "Answer with the city only."}
CONVERSATIONS = [[SYSTEM, {"role": "user", "content": a["prompt"]}, {"role": "assistant", "content": a["completion"]},
                  {"role": "user", "content": b["prompt"]}, {"role": "assistant", "content": b["completion"]}]
                 for a, b in zip(SFT[0::2], SFT[1::2])]


def _answer(model, tok, messages: list[dict]) -> str:
    import torch

    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
    return tok.decode(ids[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_multi_turn_messages_learn_every_assistant_turn(train, models_dir, home, tmp_path):
    from tuneloop.evaluation.quick import load_for_eval
    from tuneloop.models.builtin import ensure_builtin

    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS])
    job = train("sft", data, hyperparameters={"max_steps": 120, "save_steps": 1000})
    assert job["spec"]["dataset_format"] == "messages"
    staged = [json.loads(x) for x in (tmp_path / "home").glob("projects/*/jobs/*/data/train.jsonl").__next__()
              .read_text().splitlines()]
    assert staged[0]["messages"][0] == SYSTEM  # system prompts are kept

    base = str(ensure_builtin("tuneloop/tiny-qwen3", models_dir))
    tuned, tok = load_for_eval(base, job["output_path"])
    first = [_answer(tuned, tok, c[:2]) == c[2]["content"] for c in CONVERSATIONS]
    second = [_answer(tuned, tok, c[:4]) == c[4]["content"] for c in CONVERSATIONS]
    print(f"first turns {sum(first)}/{len(first)}, second turns {sum(second)}/{len(second)}")
    assert sum(first) >= 7 and sum(second) >= 7
