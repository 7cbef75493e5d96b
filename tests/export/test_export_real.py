"""tuneloop export on the real model (SmolLM2-135M-Instruct, llama, ChatML, tied head): a LoRA
adapter with nonzero B on it, exported merged, as GGUF f16 and q8_0, and for Ollama; each export,
loaded back by plain transformers, answers the unexported (peft) model's greedy answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.helpers import agreement, forced_agreement, greedy_answers, load_gguf, load_peft, make_adapter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def real_folder(real_model_folder) -> Path:
    """The real model as a Hugging Face folder (the session's one conversion of the GGUF)."""
    return real_model_folder


@pytest.fixture(scope="session")
def real_adapter(real_folder, tmp_path_factory) -> tuple[Path, list[list[int]]]:
    """(adapter folder, the unexported model's greedy answers)."""
    adapter = make_adapter(real_folder, tmp_path_factory.mktemp("smollm2-lora") / "adapter", scale=0.02)
    model, tokenizer = load_peft(real_folder, adapter)
    want = greedy_answers(model, tokenizer)
    with model.disable_adapter():   # the merge must matter, or these tests check nothing about it
        assert greedy_answers(model, tokenizer) != want
    return adapter, want


def _export(adapter: Path, fmt: str, out: Path, **kw):
    from tuneloop.export import export_model
    from tuneloop.models.resolve import resolve

    return export_model(resolve(str(adapter), use="eval"), fmt, out, **kw)


def test_merged_answers_exactly(real_adapter, tmp_path, home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, want = real_adapter
    result = _export(adapter, "merged", tmp_path / "merged")
    assert result.verify.passed and result.verify.identical == result.verify.prompts
    model = AutoModelForCausalLM.from_pretrained(result.output)
    assert greedy_answers(model, AutoTokenizer.from_pretrained(result.output)) == want


@pytest.mark.parametrize("quant,needed", [("f16", 1.0), ("q8_0", 0.9)])
def test_gguf_answers_like_the_adapter(real_adapter, tmp_path, home, quant, needed):
    adapter, want = real_adapter
    result = _export(adapter, "gguf", tmp_path / "gguf", quant=quant)
    assert result.gguf["architecture"] == "llama" and result.gguf["tied_embeddings"] is True
    print(f"{quant}: export's own check: {result.verify.summary()}")
    assert result.verify.passed
    model, tokenizer = load_gguf(Path(result.output) / result.files[0])
    got = greedy_answers(model, tokenizer)
    tokens = forced_agreement(model, tokenizer, want)
    print(f"{quant}: {agreement(want, got):.0%} of the test's prompts answered identically, {tokens:.1%} of "
          "their tokens predicted alike")
    if needed >= 1.0:   # f16: the same greedy answers
        assert agreement(want, got) == 1.0
    else:               # q8_0: at least `needed` of the answers' tokens (a greedy answer diverges after one flip)
        assert tokens >= needed


def test_ollama_modelfile(real_adapter, tmp_path, home):
    adapter, _ = real_adapter
    result = _export(adapter, "ollama", tmp_path / "ollama", quant="f16", verify=False)
    gguf = next(n for n in result.files if n.endswith(".f16.gguf"))
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    assert f"FROM ./{gguf}" in text and "<|im_start|>{{ .Role }}" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "num_ctx 4096" in text
