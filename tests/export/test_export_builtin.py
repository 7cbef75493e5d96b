"""tuneloop export on the built-in tiny models (seconds): GGUF round trips for qwen3 (tied head,
q/k norms) and llama (untied head, the Q/K permutation), merged folders, the Ollama Modelfile,
artifacts of registered versions, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.export.helpers import greedy_answers, load_gguf, load_peft, make_adapter

QWEN3, LLAMA = "tuneloop/tiny-qwen3", "tuneloop/tiny-llama"

pytestmark = pytest.mark.slow   # model round trips: tens of seconds together (CI runs them in make test)


@pytest.fixture(scope="session")
def tiny_adapters(models_dir, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """model id -> (base folder, adapter folder with random nonzero B)."""
    from tuneloop.models.builtin import ensure_builtin

    out = {}
    for model_id in (QWEN3, LLAMA):
        base = ensure_builtin(model_id, models_dir)
        adapter = make_adapter(base, tmp_path_factory.mktemp("adapter") / model_id.split("/")[1], scale=0.2)
        out[model_id] = (base, adapter)
    return out


def _register(adapter: Path) -> str:
    """A completed sft job whose output is `adapter`, registered as the project's next version."""
    from tuneloop.service.app import open_services

    store = open_services().store
    store.insert_job(dict(id="default-tune-sft-1", project="default", technique="sft", training_type="lora",
                          model=QWEN3, dataset="d.jsonl", spec={}, plan={}, job_dir=str(adapter.parent)))
    store.update_job("default-tune-sft-1", state="completed", active_key=None, output_path=str(adapter.resolve()),
                     output_type="adapter")
    version = store.register_package("default-tune-models", "default", dict(
        job_id="default-tune-sft-1", technique="sft", training_type="lora", base_model=QWEN3, dataset="d.jsonl",
        dataset_sha256="0" * 64, output_path=str(adapter.resolve()), output_type="adapter", metrics={}))
    return f"default-tune-models@v{version}"


@pytest.mark.parametrize("model_id,quant", [(QWEN3, "q8_0"), (LLAMA, "f16"), (LLAMA, "f32")])
def test_gguf_answers_like_the_adapter(tiny_adapters, tmp_path, home, model_id, quant):
    from tuneloop.export import export_model
    from tuneloop.models.resolve import resolve

    base, adapter = tiny_adapters[model_id]
    ref = resolve(str(adapter), use="eval")
    result = export_model(ref, "gguf", tmp_path / "out", quant=quant)
    path = tmp_path / "out" / result.files[0]
    assert path.suffix == ".gguf" and result.verify.passed, result.verify.summary()
    assert result.gguf["tied_embeddings"] is (model_id == QWEN3)
    model, tokenizer = load_peft(base, adapter)
    want = greedy_answers(model, tokenizer)
    with model.disable_adapter():   # the adapter must change the answers, or nothing here tests the merge
        assert greedy_answers(model, tokenizer) != want
    exported, exported_tokenizer = load_gguf(path, head_dim=32 if model_id == QWEN3 else None)
    assert greedy_answers(exported, exported_tokenizer) == want
    assert not list(path.parent.glob(".*tmp*"))   # written atomically: no temporary file left


def test_merged_folder_loads_without_peft(tiny_adapters, tmp_path, home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.export import export_model
    from tuneloop.models.resolve import resolve

    base, adapter = tiny_adapters[LLAMA]
    result = export_model(resolve(str(adapter), use="eval"), "merged", tmp_path / "merged")
    folder = Path(result.output)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= set(result.files)
    assert not (folder / "adapter_config.json").exists()
    merged, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert greedy_answers(merged, tokenizer) == greedy_answers(*load_peft(base, adapter))
    with pytest.raises(Exception, match="not empty"):
        export_model(resolve(str(adapter), use="eval"), "merged", folder)


def test_cli_exports_a_registered_version_as_ollama_and_records_the_artifact(tiny_adapters, tmp_path, home):
    _, adapter = tiny_adapters[QWEN3]
    version = _register(adapter)
    out = tmp_path / "ollama"
    r = cli("export", "sft", "--format", "ollama", "--output", str(out), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    gguf = next(n for n in result["files"] if n.endswith(".q8_0.gguf"))
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{gguf}\n" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "WARNING" not in modelfile
    assert "ollama create" in (out / "README.md").read_text()
    assert result["verify"]["passed"] and result["artifact"]["version"] == int(version.rpartition("@v")[2])
    from tuneloop.service.app import open_services

    artifacts = open_services().store.list_artifacts("default-tune-models")
    assert [(a["format"], a["quant"], a["path"]) for a in artifacts] == [("ollama", "q8_0", str(out.resolve()))]
    assert artifacts[0]["verify"]["token_agreement"] >= 0.9


def test_bad_reference_exits_1_with_the_resolvers_message(home, tmp_path):
    r = cli("export", "no-such-model", "--format", "gguf", "--output", str(tmp_path / "x"))
    assert r.returncode == 1
    assert "'no-such-model' is not a folder, a job, a registered version" in r.stderr
    r = cli("export", QWEN3, "--format", "onnx", "--output", str(tmp_path / "x"))
    assert r.returncode == 1 and "Unknown export format 'onnx'" in r.stderr and "merged, gguf, ollama" in r.stderr
    assert not (tmp_path / "x").exists()


def test_unsupported_architecture_is_refused_before_writing(tmp_path, home):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tuneloop.errors import ValidationError
    from tuneloop.export import export_model
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.models.resolve import resolve
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=4096)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(ensure_builtin(QWEN3, Path(__import__("os").environ["TUNELOOP_MODELS_DIR"]))
                                  ).save_pretrained(folder)
    for fmt in ("gguf", "ollama"):   # one check of the architecture (gguf_writer), before any file
        with pytest.raises(ValidationError, match="supports the llama, qwen2, qwen3 architectures; this model is gpt2"):
            export_model(resolve(str(folder), use="eval"), fmt, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValidationError, match="Unknown GGUF quantization 'q4_k'"):
        export_model(resolve(QWEN3, use="eval"), "gguf", tmp_path / "out", quant="q4_k")


def test_modelfile_templates():
    from tuneloop.export.ollama import default_system, modelfile, template_family

    smol = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
            "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
            "{% endfor %}")
    assert template_family(smol) == "chatml"
    assert default_system(smol) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    text, notes = modelfile("m.gguf", smol, eos_token="<|im_end|>", context_length=8192)
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text and "num_ctx 4096" in text and not notes
    llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    text, notes = modelfile("m.gguf", llama3, eos_token="<|eot_id|>", context_length=2048)
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in text and 'PARAMETER stop "<|eot_id|>"' in text
    text, notes = modelfile("m.gguf", "{{ messages }}", eos_token="</s>", context_length=2048)
    assert notes and "# WARNING:" in text and "generic" in text and 'PARAMETER stop "</s>"' in text
