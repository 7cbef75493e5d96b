"""The embedded serving engine on the real pretrained model (SmolLM2-135M-Instruct, fixture
`real_gguf`, converted once per session by the resolver): its greedy answers, requests sent
together so they share prefill and decode batches, equal transformers' `model.generate
(do_sample=False)` one prompt at a time, on the base and on a LoRA adapter loaded beside it
(PEFT's generate), with base and adapter rows mixed in one batch."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuneloop.serving.engine import BaseModel, SamplingParams  # noqa: E402

PROMPTS = ["What is the capital of France?", "Write a haiku about coding.", "Name three prime numbers."]
TOKENS = 12
pytestmark = pytest.mark.slow   # the session's conversion of the real model, two loads of it


@pytest.fixture(scope="module")
def real_folder(real_model_folder) -> Path:
    return real_model_folder   # the session's one conversion (tests/conftest.py)


@pytest.fixture(scope="module")
def adapter(real_folder, tmp_path_factory) -> Path:
    """A random LoRA (rank 8, attention and MLP projections) that changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(real_folder, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                      target_modules=["q_proj", "v_proj", "down_proj"]))
    out = tmp_path_factory.mktemp("real-lora") / "a"
    model.save_pretrained(out)
    return out


def _generate(model, tok, prompts: list[str]) -> list[str]:
    texts = []
    for prompt in prompts:
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        texts.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return texts


def test_engine_greedy_equals_generate_on_the_real_model(real_folder, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.serving.hf_engine import TransformersEngine

    tok = AutoTokenizer.from_pretrained(real_folder)
    base = AutoModelForCausalLM.from_pretrained(real_folder, dtype=torch.float32).eval()
    expected = {"base": _generate(base, tok, PROMPTS)}
    expected["a"] = _generate(PeftModel.from_pretrained(base, adapter).eval(), tok, PROMPTS)
    assert expected["a"] != expected["base"]   # the adapter is really applied
    del base

    engine = TransformersEngine(BaseModel("base", str(real_folder)), batch_window_ms=50)
    try:
        def ask_all(models: list[str]) -> dict[tuple[str, int], str]:
            """Every (model, prompt) at once: they are prefilled and decoded together."""
            texts, finished, lock, done = {}, set(), threading.Lock(), threading.Event()
            jobs = [(m, i) for m in models for i in range(len(PROMPTS))]

            def sink_for(key):
                def sink(kind, _index, value):
                    with lock:
                        if kind == "text":
                            texts[key] = texts.get(key, "") + value
                        else:                      # finish, or error
                            texts[key] = texts.get(key, "") if kind == "finish" else f"error: {value}"
                            finished.add(key)
                        if len(finished) == len(jobs):
                            done.set()
                return sink

            for key in jobs:
                ids = engine.encode(key[0], messages=[{"role": "user", "content": PROMPTS[key[1]]}])
                engine.submit(key[0], [ids], SamplingParams(temperature=0, max_tokens=TOKENS), sink_for(key))
            assert done.wait(300), "no answer"
            return texts

        got = ask_all(["base"])                    # no adapter loaded: the plain base model
        assert [got["base", i] for i in range(len(PROMPTS))] == expected["base"]
        engine.load_adapter("a", str(adapter))
        got = ask_all(["base", "a"])               # base and adapter rows in the same batches
        for model in ("base", "a"):
            assert [got[model, i] for i in range(len(PROMPTS))] == expected[model], model
        assert engine.stats()["mixed_forwards"] > 0
    finally:
        engine.close()
