"""Every model source through the one resolver, on tiny crafted inputs: GGUF headers (the shape
without converting, bad magic, truncated tensor data, an architecture transformers cannot read),
files that are not models, pickle-only folders, folders that name their own code (auto_map), and
Hub ids in a stand-in Hugging Face cache (models--ORG--NAME/snapshots/REV + refs/main).
The real GGUF's conversion, training, evaluation and serving: tests/e2e/test_model_sources.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tuneloop.errors import CatalogError, ValidationError
from tuneloop.models import gguf
from tuneloop.models.resolve import resolve
from tuneloop.models.shape import model_shape


def write_gguf(path: Path, arch: str = "llama", layers: int = 2, hidden: int = 8, vocab: int = 32) -> Path:
    """A tiny GGUF with llama.cpp's key names and F32 tensors (no tokenizer: its header is what is tested)."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_head_count(2)
    w.add_vocab_size(vocab)
    w.add_tensor("token_embd.weight", np.zeros((vocab, hidden), np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.ones((hidden, hidden), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hf_cache(root: Path, repo_id: str, files: dict[str, Path | str]) -> Path:
    """A folder laid out as the Hugging Face cache holding `repo_id` (files linked, or written)."""
    org, name = repo_id.split("/")
    repo = root / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for file, source in files.items():
        if isinstance(source, Path):
            (snapshot / file).symlink_to(source)
        else:
            (snapshot / file).write_text(source)
    return snapshot


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


def test_a_gguf_resolves_from_its_header_without_converting(tmp_path, models_dir):
    path = write_gguf(tmp_path / "tiny.gguf")
    ref = resolve(str(path), technique="sft", models_dir=models_dir)
    sha = gguf.file_sha256(path, models_dir)
    assert (ref.id, ref.kind, ref.gguf, ref.via, ref.entry) == (str(path.resolve()), "gguf", str(path.resolve()),
                                                                "file", None)
    assert ref.base == str(models_dir / "gguf" / sha) and "GGUF file outside the catalog" in ref.notes[0]
    assert ref.local_folder(convert=False) is None and not (models_dir / "gguf" / sha).exists()
    shape = model_shape(None, 0, gguf=ref.gguf)
    assert (shape.parameters, shape.layers, shape.hidden, shape.vocab, shape.heads) == (32 * 8 + 2 * 64, 2, 8, 32, 2)
    info = gguf.read_header(path)
    assert (info.architecture, info.context_length, info.tensor_types, info.chat_template) == ("llama", 128,
                                                                                                ("F32",), False)
    copy = tmp_path / "renamed.bin"   # the magic, not the name, makes a GGUF; the bytes its identity
    copy.write_bytes(path.read_bytes())
    again = resolve(str(copy), use="eval", models_dir=models_dir)
    assert again.kind == "gguf" and again.base == ref.base


def test_bad_gguf_files_are_refused_with_what_is_wrong(tmp_path, models_dir):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(64))
    with pytest.raises(ValidationError, match=r"is not a GGUF file: it starts with b'GGML'"):
        resolve(str(bad), technique="sft", models_dir=models_dir)
    good = write_gguf(tmp_path / "good.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(good[:-100])                  # tensor data cut short
    with pytest.raises(ValidationError, match="truncated") as e:
        resolve(str(tmp_path / "cut.gguf"), use="eval", models_dir=models_dir)
    assert "Download or copy the file again" in e.value.hint
    (tmp_path / "header.gguf").write_bytes(good[:40])                 # inside the header
    with pytest.raises(ValidationError, match="not a readable GGUF file|truncated"):
        resolve(str(tmp_path / "header.gguf"), use="serve", models_dir=models_dir)
    with pytest.raises(ValidationError, match="an architecture transformers cannot read from GGUF") as e:
        resolve(str(write_gguf(tmp_path / "rwkv.gguf", arch="rwkv7")), technique="sft", models_dir=models_dir)
    assert "'rwkv7'" in e.value.message and "convert the model to a Hugging Face folder" in e.value.hint
    with pytest.raises(ValidationError, match="GGUF file .*missing.gguf does not exist"):
        resolve(str(tmp_path / "missing.gguf"), technique="sft", models_dir=models_dir)
    assert not (models_dir / "gguf").exists() or not any((models_dir / "gguf").iterdir())


def test_files_that_are_not_models_and_pickle_only_folders(tmp_path, models_dir):
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(b"\x80\x04not read")
    with pytest.raises(ValidationError, match="is a file; a model is a folder .* never loads pickled weights"):
        resolve(str(weights), technique="sft", models_dir=models_dir)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    with pytest.raises(ValidationError, match=r"holds only pickled weights \(pytorch_model.bin\)") as e:
        resolve(str(folder), use="eval", models_dir=models_dir)
    assert "save_pretrained(sys.argv[1], safe_serialization=True)" in e.value.hint
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / "m.Q4_0.gguf").write_bytes(b"")
    with pytest.raises(ValidationError, match="has no config.json") as e:
        resolve(str(holder), technique="sft", models_dir=models_dir)
    assert "pass the file itself, e.g. --model" in e.value.hint


def _folder_with_code(folder: Path, model_type: str) -> Path:
    from tests.unit.test_model_resolve import _safetensors

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "num_hidden_layers": 1,
                                                    "hidden_size": 8, "vocab_size": 32,
                                                    "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}))
    (folder / "modeling_x.py").write_text("raise SystemExit('remote code ran')\n")
    _safetensors(folder / "model.safetensors", {"embed.weight": [32, 8]})
    return folder


def test_remote_code_stays_off(tmp_path, models_dir):
    known = resolve(str(_folder_with_code(tmp_path / "known", "llama")), technique="sft", models_dir=models_dir)
    assert known.kind == "local" and any("ignores it and loads the model with transformers' llama" in n
                                         for n in known.notes)
    with pytest.raises(ValidationError, match="needs its own Python code to load") as e:
        resolve(str(_folder_with_code(tmp_path / "custom", "x-custom-arch")), use="eval", models_dir=models_dir)
    assert "trust_remote_code stays off" in e.value.message


def test_hub_ids_come_from_the_local_cache_or_name_hf_download(tmp_path, models_dir, monkeypatch):
    from tests.unit.test_model_resolve import _model

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    model = _model(tmp_path / "real")
    snapshot = hf_cache(cache, "HuggingFaceTB/SmolLM2-135M-Instruct",
                        {f: model / f for f in ("config.json", "model.safetensors")})
    ref = resolve("HuggingFaceTB/SmolLM2-135M-Instruct", technique="sft", models_dir=models_dir)
    assert (ref.id, ref.kind, ref.base, ref.via, ref.entry) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub",
                                                                str(snapshot.resolve()), "hub", None)
    assert ref.load_path() == str(snapshot.resolve()) and "in the local Hugging Face cache" in ref.notes[0]
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct", use="serve", models_dir=models_dir).load_path() \
        == str(snapshot)

    catalog_snapshot = hf_cache(cache, "Qwen/Qwen3-0.6B", {"config.json": model / "config.json"})
    qwen = resolve("Qwen/Qwen3-0.6B", technique="sft", models_dir=models_dir)
    assert qwen.kind == "catalog" and qwen.entry is not None and qwen.load_path() == str(catalog_snapshot)
    assert qwen.local_folder() == catalog_snapshot

    with pytest.raises(CatalogError, match="not yet supported") as e:   # tune: the catalog's error, and the fix
        resolve("acme/missing-7b", technique="sft", models_dir=models_dir)
    assert "hf download acme/missing-7b" in e.value.hint and "HF_HUB_OFFLINE=1" in e.value.hint
    with pytest.raises(ValidationError, match="is not a folder, a job") as e:
        resolve("acme/missing-7b", use="eval", models_dir=models_dir)
    assert "huggingface-cli download acme/missing-7b" in e.value.hint and str(cache) in e.value.hint
    llama = resolve("meta-llama/Llama-3.2-1B-Instruct", use="eval", models_dir=models_dir)
    with pytest.raises(ValidationError, match="is not in the local Hugging Face cache") as e:
        llama.load_path()
    assert "hf download meta-llama/Llama-3.2-1B-Instruct" in e.value.hint


def test_a_conversion_is_atomic_and_a_killed_ones_leftover_is_swept(tmp_path, models_dir, monkeypatch):
    path = write_gguf(tmp_path / "tiny.gguf")
    ref = resolve(str(path), use="eval", models_dir=models_dir)
    folder = Path(ref.base)
    stale = folder.parent / f".{folder.name}.tmp-999999999-deadbeef"   # a conversion killed mid-way (no such pid)
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")

    def crash(source, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise ValidationError("transformers could not load it")

    monkeypatch.setattr(gguf, "_convert", crash)
    with pytest.raises(ValidationError, match="could not load it"):
        ref.load_path()
    assert not folder.exists() and not stale.exists() and not list(folder.parent.glob(".*.tmp-*"))

    def convert(source, out):
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
        return "float32"

    monkeypatch.setattr(gguf, "_convert", convert)
    assert ref.load_path() == str(folder) and ref.local_folder(convert=False) == folder
    marker = gguf.converted(folder)
    assert marker["source"] == str(path.resolve()) and marker["sha256"] == folder.name
    assert marker["size"] == path.stat().st_size and marker["architecture"] == "llama"
    monkeypatch.setattr(gguf, "_convert", crash)
    assert ref.load_path() == str(folder)   # converted once: the marker says so


def test_big_files_memoise_their_identity(tmp_path, models_dir, monkeypatch):
    path = write_gguf(tmp_path / "tiny.gguf")
    sha = gguf.file_sha256(path, models_dir)
    monkeypatch.setattr(gguf, "VERIFY_MAX_BYTES", 16)   # treat the tiny file as a big one
    assert gguf.file_sha256(path, models_dir) == sha
    memo = json.loads((models_dir / "gguf" / "identities.json").read_text())
    assert memo[str(path.resolve())]["sha256"] == sha
    memo[str(path.resolve())]["sha256"] = "0" * 64      # the memo is trusted while size and mtime match...
    (models_dir / "gguf" / "identities.json").write_text(json.dumps(memo))
    assert gguf.file_sha256(path, models_dir) == "0" * 64
    os.utime(path, ns=(1, 1))                           # ...and a touched file is hashed again
    assert gguf.file_sha256(path, models_dir) == sha


def test_an_adapter_trained_on_a_gguf_finds_its_base_again(tmp_path, models_dir):
    from tests.unit.test_model_resolve import _adapter

    path = write_gguf(tmp_path / "tiny.gguf")
    adapter = _adapter(tmp_path / "adapter", str(tmp_path / "models-dir-since-cleaned" / "gguf" / "x"))
    (adapter / "manifest.json").write_text(json.dumps({"base_model": str(path.resolve())}))
    ref = resolve(str(adapter), use="eval", models_dir=models_dir)
    assert (ref.kind, ref.adapter, ref.gguf) == ("adapter", str(adapter.resolve()), str(path.resolve()))
    assert ref.base == str(gguf.cache_folder(models_dir, gguf.file_sha256(path, models_dir)))  # load_path converts
