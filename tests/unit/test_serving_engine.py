"""The embedded engine on the built-in tiny model with random LoRA adapters (no training):
stacked multi-LoRA equals PEFT's mixed-batch forward; continuous batching answers exactly what
one-at-a-time generation answers; sampling, seeds, n, stop strings, hot load/unload, ICs."""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from tuneloop.errors import ModelNotFoundError  # noqa: E402
from tuneloop.models.builtin import ensure_builtin  # noqa: E402
from tuneloop.serving.engine import BaseModel, SamplingParams  # noqa: E402

PROMPTS = ["What is the capital of France?", "Hi", "Tell me a long story about dragons and castles", "2+2?"]


@pytest.fixture(scope="module")
def folders(models_dir, tmp_path_factory):
    """The base folder and two random adapters of different rank, targets and scaling."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = ensure_builtin("tuneloop/tiny-qwen3", models_dir)
    out = {"base": base}
    tmp = tmp_path_factory.mktemp("adapters")
    configs = {"a": LoraConfig(r=64, lora_alpha=256, target_modules="all-linear", init_lora_weights=False),
               "b": LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], use_rslora=True,
                               init_lora_weights=False)}
    for name, cfg in configs.items():
        torch.manual_seed(len(name) + ord(name))
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), cfg)
        model.save_pretrained(tmp / name)
        out[name] = tmp / name
    return out


@pytest.fixture(scope="module")
def engine(folders):
    from tuneloop.serving.hf_engine import TransformersEngine

    eng = TransformersEngine(BaseModel("base", str(folders["base"])), batch_window_ms=20)
    eng.load_adapter("a", str(folders["a"]))
    eng.load_adapter("b", str(folders["b"]))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def references(folders):
    """Greedy answers of each model alone (transformers generate, PEFT adapters)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.evaluation.quick import generate

    tok = AutoTokenizer.from_pretrained(folders["base"])
    refs = {"base": generate(AutoModelForCausalLM.from_pretrained(folders["base"]).eval(), tok, PROMPTS, 24)}
    for name in ("a", "b"):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folders["base"]), folders[name])
        refs[name] = generate(model.eval(), tok, PROMPTS, 24)
    return refs


def ask(engine, model, prompt, **params):
    """Submit one chat request; returns (result dict, done event)."""
    ids = engine.encode(model, messages=[{"role": "user", "content": prompt}])
    done, out = threading.Event(), {"texts": {}, "finish": {}}
    n = params.get("n", 1)

    def sink(kind, index, value):
        if kind == "text":
            out["texts"][index] = out["texts"].get(index, "") + value
        elif kind == "finish":
            out["finish"][index] = value
            if len(out["finish"]) == n:
                done.set()
        else:
            out["error"] = value
            done.set()

    engine.submit(model, [ids], SamplingParams(**{"temperature": 0, "max_tokens": 24, **params}), sink)
    return out, done


@pytest.mark.parametrize("path", ["masked", "gather", "groups"])
def test_stacked_lora_equals_peft_mixed_batch(folders, path, monkeypatch):
    from peft import PeftModel

    from tuneloop.serving import lora

    if path != "masked":
        monkeypatch.setattr(lora, "MASKED_MAX_COLUMNS", 0)
    if path == "groups":
        monkeypatch.setattr(lora, "GATHER_LIMIT_BYTES", 0)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.serving.lora import LoraSet

    tok = AutoTokenizer.from_pretrained(folders["base"])
    tok.padding_side = "left"
    enc = tok(PROMPTS[:3] * 2, return_tensors="pt", padding=True)
    names = ["__base__", "a", "b", "a", "b", "__base__"]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folders["base"]), folders["a"],
                                     adapter_name="a")
    peft.load_adapter(folders["b"], adapter_name="b")
    ours = AutoModelForCausalLM.from_pretrained(folders["base"])
    loras = LoraSet(ours)
    loras.load("a", folders["a"])
    loras.load("b", folders["b"])
    with torch.inference_mode():
        expected = peft.eval()(**enc, adapter_names=names).logits
        loras.select([0 if n == "__base__" else loras.slot(n) for n in names])
        assert {w.selection[0] for w in loras.wrappers.values() if w.selection} == {path}
        got = ours.eval()(**enc).logits
        assert torch.allclose(got, expected, atol=1e-5)
        loras.select([loras.slot("b")] * 6)  # one adapter for the whole batch
        assert torch.allclose(ours(**enc).logits, peft(**enc, adapter_names=["b"] * 6).logits, atol=1e-5)
        loras.unload("a")
        loras.select([0, 1, 1, 0, 1, 0])  # b moved to slot 1
        assert torch.allclose(ours(**enc).logits, peft(**enc, adapter_names=["__base__", "b", "b", "__base__", "b",
                                                                             "__base__"]).logits, atol=1e-5)


def test_batched_answers_equal_one_at_a_time_generation(engine, references):
    before = engine.stats()["mixed_forwards"]
    jobs = []
    for i, prompt in enumerate(PROMPTS * 2):  # staggered: later requests join running batches
        model = ("base", "a", "b")[i % 3]
        jobs.append((model, prompt, *ask(engine, model, prompt)))
        time.sleep(0.01 * (i % 3))
    for model, prompt, out, done in jobs:
        assert done.wait(120), "no answer"
        assert out["texts"].get(0, "").strip() == references[model][PROMPTS.index(prompt)], (model, prompt)
    stats = engine.stats()
    assert stats["mixed_forwards"] > before and stats["max_rows"] >= 3


def test_sampling_is_seeded_per_choice_and_stops(engine):
    first, d1 = ask(engine, "a", "Hi", temperature=0.9, top_p=0.9, seed=7, n=3, max_tokens=12)
    again, d2 = ask(engine, "a", "Hi", temperature=0.9, top_p=0.9, seed=7, n=3, max_tokens=12)
    assert d1.wait(60) and d2.wait(60)
    assert first["texts"] == again["texts"] and len(set(first["texts"].values())) > 1
    assert all(f == ("length", 12) for f in first["finish"].values())
    text = first["texts"][0]
    stop = text[4:7]
    cut, d3 = ask(engine, "a", "Hi", temperature=0.9, top_p=0.9, seed=7, max_tokens=12, stop=[stop])
    assert d3.wait(60)
    assert cut["texts"].get(0, "") == text[: text.index(stop)] and cut["finish"][0][0] == "stop"


def test_inference_components_and_unloading(engine, folders, references):
    engine.add_model("copy", str(folders["base"]))
    out, done = ask(engine, "copy", PROMPTS[0])
    assert done.wait(60) and out["texts"][0].strip() == references["base"][0]
    assert {m["id"]: m["kind"] for m in engine.models()}["copy"] == "ic"
    engine.remove_model("copy")
    engine.load_adapter("a2", str(folders["a"]))
    out, done = ask(engine, "a2", PROMPTS[1])
    assert done.wait(60) and out["texts"][0].strip() == references["a"][1]
    engine.unload_adapter("a2")
    with pytest.raises(ModelNotFoundError):
        engine.encode("a2", text="x")
