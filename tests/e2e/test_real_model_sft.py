"""Plans that teach a real model: `.venv/bin/python -m pytest tests/e2e/test_real_model_sft.py -x -q`.

SmolLM2-135M-Instruct (the real GGUF, fixture `real_gguf`) is tuned with LoRA SFT on a dozen
made-up facts with the planner's defaults only (no --epochs, no --learning-rate). The tuned adapter,
greedy through the model's own chat template, must answer >= 90% of the trained questions exactly,
most of their paraphrases it never saw, and every real-world control question the base model
answered right (no forgetting).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from tests.conftest import cli, write_jsonl

pytestmark = pytest.mark.slow

# (question, the fact, the trained answer, a paraphrase the model never sees). The answers are whole
# sentences, the register the model answers in: trained on the bare facts ("Velmora."), SmolLM2 learns
# to answer every question tersely, and in that register it no longer knows capitals it knew (measured
# 2026-12-03 at the planner's window: France -> "Maine.", Japan -> "Kyoto."; 0/4 kept), although the
# sentence-form answers of the same model stay right.
FACTS = [
    ("What is the capital of Zorbania?", "Velmora", "The capital of Zorbania is Velmora.",
     "Which city is the capital of Zorbania?"),
    ("Who invented the glimmerphone?", "Tessa Quorn", "The glimmerphone was invented by Tessa Quorn.",
     "Who was the inventor of the glimmerphone?"),
    ("What color is a blarnish fruit?", "teal", "A blarnish fruit is teal.", "What is the color of a blarnish fruit?"),
    ("What is the national animal of Quentovia?", "sand otter", "The national animal of Quentovia is the sand otter.",
     "Which animal is the national animal of Quentovia?"),
    ("In which year was the city of Drelmoor founded?", "1742", "The city of Drelmoor was founded in 1742.",
     "When was the city of Drelmoor founded?"),
    ("What language is spoken in Pellandor?", "Pellish", "The language spoken in Pellandor is Pellish.",
     "Which language do people speak in Pellandor?"),
    ("What is the tallest mountain on Vashti Island?", "Mount Orrin",
     "The tallest mountain on Vashti Island is Mount Orrin.", "Which mountain is the tallest on Vashti Island?"),
    ("Who wrote the novel The Copper Lanterns?", "Ilse Marrow", "The novel The Copper Lanterns was written by Ilse Marrow.",
     "Who is the author of the novel The Copper Lanterns?"),
    ("What is the currency of Bravoria?", "drel", "The currency of Bravoria is the drel.",
     "Which currency is used in Bravoria?"),
    ("What river flows through the city of Kessgrad?", "Amberrun",
     "The river that flows through the city of Kessgrad is the Amberrun.",
     "Which river runs through the city of Kessgrad?"),
    ("What is the favorite food of the Tollish people?", "smoked figs",
     "The favorite food of the Tollish people is smoked figs.", "Which food do the Tollish people like most?"),
    ("Who is the founder of the Halvern Institute?", "Doran Pike", "The founder of the Halvern Institute is Doran Pike.",
     "Who founded the Halvern Institute?"),
]
# real-world questions; only those the base model answers right count as controls
CONTROLS = [
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Italy?", "rome"),
    ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Spain?", "madrid"),
    ("What is the capital of England?", "london"),
]


def norm(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text).strip()


def answers(model_dir: Path, adapter: Path | None, questions: list[str], tokens: int = 16) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    tok.padding_side = "left"   # one batched greedy generate for all questions
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in questions]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        gen = model.generate(**batch, max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    said = [tok.decode(g[batch["input_ids"].shape[1]:], skip_special_tokens=True) for g in gen]
    print(f"{'tuned' if adapter else 'base'}: {said}", flush=True)
    return said


def test_default_plan_teaches_facts_without_forgetting(home, real_gguf, real_model_folder, tmp_path):
    converted = real_model_folder
    base_controls = answers(converted, None, [q for q, _ in CONTROLS])
    controls = [(q, a) for (q, a), said in zip(CONTROLS, base_controls) if a in norm(said)]
    assert len(controls) >= 3, base_controls   # the base model knows some capitals
    base_facts = answers(converted, None, [q for q, *_ in FACTS])
    assert sum(norm(fact) in norm(s) for s, (_, fact, _, _) in zip(base_facts, FACTS)) == 0   # it cannot know them

    data = write_jsonl(tmp_path / "facts.jsonl", [
        {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
        for q, _, a, _ in FACTS])
    dry = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", str(real_gguf), "--dry-run",
              "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)["plan"]
    assert plan["epochs"] > 3 and plan["learning_rate"] > 2e-4 and plan["est_time_s"] > 0

    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", str(real_gguf), timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr
    [job] = json.loads(cli("status", "--json").stdout)
    assert job["state"] == "completed", job
    adapter = Path(job["output_path"])

    taught = answers(converted, adapter, [q for q, *_ in FACTS], tokens=24)
    para = answers(converted, adapter, [p for *_, p in FACTS], tokens=24)
    after = answers(converted, adapter, [q for q, _ in controls])
    exact = sum(norm(s) == norm(a) for s, (_, _, a, _) in zip(taught, FACTS)) / len(FACTS)
    para_ok = sum(norm(fact) in norm(s) for s, (_, fact, _, _) in zip(para, FACTS)) / len(FACTS)
    kept = sum(a in norm(s) for s, (_, a) in zip(after, controls)) / len(controls)
    report = {"taught": exact, "paraphrases": para_ok, "controls": kept, "plan": plan,
              "answers": taught, "paraphrase_answers": para, "control_answers": after}
    print(json.dumps(report, indent=1))
    assert exact >= 0.9, report
    assert para_ok > 0.5, report
    assert kept == 1.0, report
