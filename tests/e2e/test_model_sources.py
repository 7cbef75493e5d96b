"""Every model source as a user passes it to `--model`, with the real pretrained model
(SmolLM2-135M-Instruct, a Q4_1 GGUF: fixture `real_gguf`): converted once per session into the
shared models dir, answering as transformers' own GGUF load does, reused from the cache, planned
(`tune --dry-run`), trained (`tune --technique sft`), evaluated (`eval`) and served (`serve`); the
same model as a Hub id in a stand-in Hugging Face cache; and bad input (a damaged GGUF, an
architecture transformers cannot read, pickled weights, a model's own code) refused by the CLI
with exit 1 and no job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEMO_DATA, REPO, cli, write_jsonl
from tests.unit.test_model_sources import hf_cache, write_gguf
from tuneloop.models import gguf
from tuneloop.models.resolve import resolve

CAPITALS = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
pytestmark = pytest.mark.slow   # the session's conversion of the real model, CLI runs and a training job


@pytest.fixture(scope="session")
def converted(real_model_folder) -> Path:
    """The real GGUF converted once into the session's models dir (conftest's `real_model_folder`, the
    resolver's conversion; every CLI below reuses it)."""
    return real_model_folder


def _greedy(model, tokenizer, prompts: list[str], tokens: int = 12) -> list[list[int]]:
    import torch

    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=tokens, do_sample=False)
        out.append(gen[0][ids["input_ids"].shape[1]:].tolist())
    return out


def test_the_converted_folder_answers_as_transformers_gguf_load(real_gguf, converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    marker = json.loads((converted / gguf.MARKER_FILE).read_text())
    assert marker["source"] == str(real_gguf.resolve()) and marker["size"] == real_gguf.stat().st_size
    assert marker["gguf_type"] == "MOSTLY_Q4_1" and marker["sha256"] == converted.name
    assert marker["sha256"] == gguf.file_sha256(real_gguf, converted.parents[1])
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= \
        {p.name for p in converted.iterdir()}
    tok = AutoTokenizer.from_pretrained(converted)
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and "<|im_start|>" in tok.chat_template
    prompts = [CAPITALS[0]["prompt"]]
    from_folder = _greedy(AutoModelForCausalLM.from_pretrained(converted), tok, prompts)
    direct = AutoModelForCausalLM.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name)
    direct_tok = AutoTokenizer.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name)
    assert _greedy(direct, direct_tok, prompts) == from_folder
    assert "Paris" in tok.decode(from_folder[0])


def test_a_converted_gguf_is_reused_not_read_again(real_gguf, converted, models_dir, tmp_path, monkeypatch):
    stamp = (converted / gguf.MARKER_FILE).stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("converted or read again")

    monkeypatch.setattr(gguf, "_convert", refuse)
    monkeypatch.setattr(gguf, "read_header", refuse)
    ref = resolve(str(real_gguf), technique="sft", models_dir=models_dir)
    assert ref.kind == "gguf" and ref.load_path() == str(converted) and ref.local_folder(convert=False) == converted
    copy = tmp_path / "same-bytes.gguf"   # the identity is the file's bytes, not its path
    os.link(real_gguf, copy) if real_gguf.stat().st_dev == tmp_path.stat().st_dev else shutil.copy(real_gguf, copy)
    assert resolve(str(copy), use="eval", models_dir=models_dir).load_path() == str(converted)
    assert (converted / gguf.MARKER_FILE).stat().st_mtime_ns == stamp


def test_tune_plans_trains_registers_and_evaluates_a_gguf(home, real_gguf, converted, tmp_path):
    data = write_jsonl(tmp_path / "capitals.jsonl", CAPITALS[:4])
    dry = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", str(real_gguf), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Plan:" in dry.stdout and '"model_source": "gguf"' in dry.stdout and "GGUF file outside" in dry.stderr
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", str(real_gguf), "--max-steps", "2",
            "--batch-size", "2", "--max-seq-length", "64", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    assert job["state"] == "completed" and job["step"] == 2 and job["model"] == str(real_gguf.resolve())
    [package] = json.loads(cli("registry", "list", "--json").stdout)
    assert package["base_model"] == str(real_gguf.resolve())   # the lineage names what the user passed
    output = Path(job["output_path"])
    assert json.loads((output / "manifest.json").read_text())["base_model"] == str(real_gguf.resolve())
    assert json.loads((output / "adapter_config.json").read_text())["base_model_name_or_path"] == str(converted)

    e = cli("eval", "--model", str(real_gguf), "--dataset", str(data), "--samples", "2", "--max-new-tokens", "8",
            "--json")
    assert e.returncode == 0, e.stderr
    result = json.loads(e.stdout)
    assert result["rows"] == 2 and result["model"]["loss"] > 0
    assert result["base_model"] == str(converted) and "Paris" in result["samples"][0]["model"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_a_gguf(home, real_gguf, converted):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--model", str(real_gguf), "--port",
                             str(port), "--engine", "transformers"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        models = [m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]]
        assert str(real_gguf.resolve()) in models
        answer = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": str(real_gguf.resolve()), "max_tokens": 10, "temperature": 0,
            "messages": [{"role": "user", "content": CAPITALS[0]["prompt"]}]}).json()
        assert "Paris" in answer["choices"][0]["message"]["content"], answer
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_hub_id_comes_from_the_local_cache(home, converted, tmp_path):
    cache = tmp_path / "hf"
    hf_cache(cache, SMOL, {p.name: p for p in converted.iterdir() if p.name != gguf.MARKER_FILE})
    data = write_jsonl(tmp_path / "capitals.jsonl", CAPITALS[:4])
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", SMOL, "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["spec"]["model"] == SMOL and out["spec"]["model_source"] == "hub"
    missing = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", "HuggingFaceTB/SmolLM2-360M",
                  env=env)
    assert missing.returncode == 1 and "hf download HuggingFaceTB/SmolLM2-360M" in missing.stderr
    catalog = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", "Qwen/Qwen3-0.6B", env=env)
    assert catalog.returncode == 1 and "hf download Qwen/Qwen3-0.6B" in catalog.stderr, catalog.stderr
    assert json.loads(cli("status", "--json").stdout) == []


def test_bad_model_input_exits_1_and_creates_no_job(home, tmp_path):
    data = write_jsonl(tmp_path / "capitals.jsonl", CAPITALS[:4])
    good = write_gguf(tmp_path / "tiny.gguf").read_bytes()
    (tmp_path / "magic.gguf").write_bytes(b"PK\x03\x04" + good[4:])
    (tmp_path / "cut.gguf").write_bytes(good[:-64])
    write_gguf(tmp_path / "rwkv.gguf", arch="rwkv7")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04never unpickled")
    code = tmp_path / "own-code"
    code.mkdir()
    (code / "config.json").write_text(json.dumps({"model_type": "acme-net", "auto_map": {"AutoModel": "m.Net"}}))
    (code / "model.safetensors").write_bytes(b"")
    cases = {"magic.gguf": "is not a GGUF file", "cut.gguf": "truncated",
             "rwkv.gguf": "'rwkv7' model, an architecture transformers cannot read from GGUF",
             "pickled": "holds only pickled weights (pytorch_model.bin)", "own-code": "needs its own Python code"}
    for name, message in cases.items():
        r = cli("tune", "--technique", "sft", "--dataset", str(data), "--model", str(tmp_path / name))
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    assert json.loads(cli("status", "--json").stdout) == []
