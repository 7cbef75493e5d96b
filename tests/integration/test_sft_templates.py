"""SFT jobs on models whose chat template is not the built-in one: a base model without a template
trains on plain prompt + completion (the job says so) and learns to answer and stop; the real
SmolLM2 model trains on multi-turn `messages` through its own ChatML template, which has no
generation markers (pad == eos == <|im_end|>). Spans themselves: tests/unit/test_chat_masks.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tests.integration.test_sft_messages import CONVERSATIONS, SFT  # the same two-turn data

pytestmark = pytest.mark.slow



def _events(job_id: str, type: str | None = None) -> list[dict]:
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    return open_store(load_settings().database_url).list_events(job_id, type=type)


def _messages(job_id: str) -> list[str]:
    return [e["message"] for e in _events(job_id)]


@pytest.fixture(scope="session")
def real_model_dir(real_model_folder) -> Path:
    """The real model as a Hugging Face folder (the session's one conversion of the GGUF)."""
    return real_model_folder


def test_a_base_model_without_a_template_trains_on_prompt_plus_completion(train, models_dir, home, tmp_path):
    from tuneloop.evaluation.quick import exact_match, generate, load_for_eval
    from tuneloop.models.builtin import ensure_builtin

    base = tmp_path / "base-model"
    shutil.copytree(ensure_builtin("tuneloop/tiny-qwen3", models_dir), base)
    (base / "chat_template.jinja").unlink()
    (base / "tuneloop_builtin.json").unlink()
    rows = SFT[:8]
    job = train("sft", write_jsonl(tmp_path / "plain.jsonl", rows), model=str(base),   # the catalog's tiny-model knobs
                hyperparameters={"learning_rate": 0.003, "max_steps": 40, "lora_rank": 64, "lora_alpha": 256})
    line = next(m for m in _messages(job["id"]) if "no chat template" in m)
    print(line)
    assert "8 rows train as plain prompt + completion text with the loss on the completion and eos" in line
    tuned, tok = load_for_eval(str(base), job["output_path"])
    assert not tok.chat_template
    answers = generate(tuned, tok, [r["prompt"] for r in rows])
    score = exact_match(answers, [r["completion"] for r in rows])
    print(f"plain-text SFT exact match {score:.2f}: {answers[:3]}")
    assert score >= 0.75   # exact: the answers end where the completions do, so eos was learned


def test_the_real_model_trains_on_messages_through_its_own_template(train, real_model_dir, home, tmp_path):
    from transformers import AutoTokenizer

    from tuneloop.training.tokenize import has_generation_markers

    tok = AutoTokenizer.from_pretrained(real_model_dir)
    assert not has_generation_markers(tok) and tok.pad_token_id == tok.eos_token_id
    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS[:4]])
    job = train("sft", data, model=str(real_model_dir),
                hyperparameters={"max_steps": 2, "global_batch_size": 4, "dataset_max_len": 128})
    line = next(m for m in _messages(job["id"]) if m.startswith("training data:"))
    losses = [e["data"]["loss"] for e in _events(job["id"], type="metrics") if "loss" in e["data"]]
    print(line, "losses", losses)
    assert "4 rows through the chat template, loss on the assistant turns" in line and "4 by prefix" in line
    assert len(losses) == 2 and losses[1] < losses[0]   # the same 4 rows twice: the assistant tokens got likelier
    assert (Path(job["output_path"]) / "adapter_model.safetensors").is_file()
