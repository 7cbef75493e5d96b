"""RL prompt lengths are measured on the prompt as the GRPO recipe renders it (chat template with the
generation prompt, a template's default system prompt included), so the plan cuts no prompt:
`.venv/bin/python -m pytest tests/integration/test_rl_prompt_lengths.py -q`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_jsonl

# SmolLM2-style: a system turn is added when the conversation has none (~20 tokens on the tiny tokenizer)
DEFAULT_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
ROWS = [{"prompt": [{"role": "user", "content": q}], "answer": a}
        for q, a in [("What is 2+3?", "5"), ("What is 10+31?", "41"), ("7*6?", "42")]]


def plan_and_cut(folder: Path, tmp_path: Path) -> tuple[object, int, int]:
    """The dry-run plan for an RLVR job on `folder`, how many staged prompts the recipe then cuts, and
    the longest prompt as the loaded tokenizer renders it."""
    from transformers import AutoTokenizer

    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store
    from tuneloop.training.recipes.grpo import load_dataset

    settings = load_settings()
    svc = JobService(open_store(settings.database_url), settings)
    dataset = write_jsonl(tmp_path / "rl.jsonl", ROWS)
    prep = svc.prepare(TuneRequest(technique="rlvr", model=str(folder), dataset=str(dataset),
                                   reward_function="builtin:exact_match"), dry_run=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    longest = max(len(tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                              return_dict=True)["input_ids"]) for r in ROWS)
    _, cut = load_dataset(prep.staged.path, tok, prep.plan, tmp_path)
    return prep.plan, cut, longest


def test_a_template_that_adds_a_system_prompt_is_counted(home, models_dir, tmp_path):
    from tuneloop.models.builtin import ensure_builtin

    folder = tmp_path / "with-system"
    shutil.copytree(ensure_builtin("tuneloop/tiny-qwen3", models_dir), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": DEFAULT_SYSTEM_TEMPLATE}))
    plan, cut, longest = plan_and_cut(folder, tmp_path)
    assert plan.max_prompt_length == longest > 20      # exactly the rendered prompt, system turn included
    assert cut == 0


@pytest.mark.slow   # the session's conversion of the real model when no other test has made it
def test_the_real_models_prompts_are_not_cut(home, real_model_folder, tmp_path):
    """SmolLM2-135M-Instruct: short questions were planned at 18 tokens, but its template's default
    system prompt alone is ~30, so every prompt was cut."""
    plan, cut, longest = plan_and_cut(real_model_folder, tmp_path)
    assert plan.max_prompt_length == longest >= 30
    assert cut == 0
