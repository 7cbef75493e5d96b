"""Built-in models: deterministic bytes, tokenizer, chat template, loading, concurrent builds."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
from pathlib import Path

import pytest

from tuneloop.errors import NotFoundError
from tuneloop.models import builtin
from tuneloop.models.builtin import (
    BUILTIN_MODELS,
    build_tokenizer,
    ensure_builtin,
    is_builtin,
)

# Pinned: a change here means every existing ~/.tuneloop/models folder differs from a new one.
# Only update together with a deliberate change to the specs, the init, corpus.txt or the pins.
MODEL_SHA256 = {
    "tuneloop/tiny-qwen3": "32b6347d42b2d9a00592ac133ef1acb33bf47ce9dfa6ac0e70f6f45dba867376",
    "tuneloop/tiny-llama": "d83a5816ae0aba090ca1c0b519b2c6fbe0d0124d514eab407a9adac9bce5392e",
}
TOKENIZER_JSON_SHA256 = "ca1f2ed7af2e38dbf7bebf40f4463fdde892860aebf056f2bbabb266703a904f"

CONVERSATIONS = [
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
    ],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, with unicode: café ☕?"},
        {"role": "assistant", "content": "Vert 🌿 — green.\nSecond line."},
    ],
    [
        {"role": "user", "content": "Write code."},
        {"role": "assistant", "content": "def f(x):\n    return x * 2\n"},
    ],
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def qwen(models_dir) -> Path:
    return ensure_builtin("tuneloop/tiny-qwen3", models_dir)


@pytest.fixture(scope="module")
def llama(models_dir) -> Path:
    return ensure_builtin("tuneloop/tiny-llama", models_dir)


@pytest.fixture(scope="module")
def tokenizer(qwen):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen)


# --- registry ------------------------------------------------------------------------------------


def test_registry_and_unknown_id(tmp_path):
    assert set(BUILTIN_MODELS) == {"tuneloop/tiny-qwen3", "tuneloop/tiny-llama", "tuneloop/small-qwen3"}
    assert is_builtin("tuneloop/tiny-qwen3") and not is_builtin("Qwen/Qwen3-0.6B")
    with pytest.raises(NotFoundError) as info:
        ensure_builtin("tuneloop/huge-qwen3", tmp_path)
    assert "tuneloop/tiny-qwen3" in info.value.hint and "tuneloop/small-qwen3" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_current_folder_is_returned_as_is_and_older_formats_are_rebuilt(tmp_path):
    import json

    from tuneloop.models.builtin import FORMAT_VERSION, MARKER_FILE

    folder = tmp_path / "tuneloop--tiny-llama"
    folder.mkdir()
    (folder / MARKER_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    assert ensure_builtin("tuneloop/tiny-llama", tmp_path) == folder
    assert [p.name for p in folder.iterdir()] == [MARKER_FILE]
    (folder / MARKER_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION - 1}))
    assert ensure_builtin("tuneloop/tiny-llama", tmp_path) == folder
    assert (folder / "model.safetensors").is_file()


def test_small_qwen3_is_about_25m_parameters():
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    spec = BUILTIN_MODELS["tuneloop/small-qwen3"]
    config = Qwen3Config(vocab_size=builtin.VOCAB_SIZE, **spec.config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert 20e6 < sum(p.numel() for p in model.parameters()) < 30e6


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", sorted(MODEL_SHA256))
def test_model_bytes_are_pinned(models_dir, qwen, llama, model_id):
    folder = models_dir / model_id.replace("/", "--")
    assert sha256(folder / "model.safetensors") == MODEL_SHA256[model_id]
    assert sha256(folder / "tokenizer.json") == TOKENIZER_JSON_SHA256
    marker = json.loads((folder / "tuneloop_builtin.json").read_text())
    assert marker["model_id"] == model_id and marker["parameters"] > 1_000_000
    assert not list(models_dir.glob(".*.tmp-*"))


def test_rebuild_in_another_folder_is_byte_identical(qwen, tmp_path):
    builtin.build(BUILTIN_MODELS["tuneloop/tiny-qwen3"], tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json",
                 "generation_config.json", "chat_template.jinja", "tuneloop_builtin.json"):
        assert (tmp_path / name).read_bytes() == (qwen / name).read_bytes(), name


def _race(models_dir: str, barrier, queue) -> None:
    barrier.wait(timeout=120)
    folder = ensure_builtin("tuneloop/tiny-qwen3", Path(models_dir))
    queue.put((str(folder), sha256(folder / "model.safetensors"), sha256(folder / "tokenizer.json")))


def test_concurrent_builds_in_fresh_processes_give_one_good_folder(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: also proves cross-process determinism
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    folder = tmp_path / "tuneloop--tiny-qwen3"
    assert results == [(str(folder), MODEL_SHA256["tuneloop/tiny-qwen3"], TOKENIZER_JSON_SHA256)] * 2
    # only the model folder (and the lock file): no temporary build folder left behind
    assert {p.name for p in tmp_path.iterdir()} - {".tuneloop--tiny-qwen3.lock"} == {"tuneloop--tiny-qwen3"}


# --- tokenizer -----------------------------------------------------------------------------------


def test_special_tokens(tokenizer, qwen):
    assert len(tokenizer) == builtin.VOCAB_SIZE
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.bos_token is None
    assert tokenizer.convert_tokens_to_ids(builtin.SPECIAL_TOKENS) == [0, 1, 2, 3]
    config = json.loads((qwen / "config.json").read_text())
    assert (config["eos_token_id"], config["pad_token_id"], config["bos_token_id"]) == (2, 3, None)
    assert config["vocab_size"] == len(tokenizer)
    gen = json.loads((qwen / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"]) == (2, 3)
    # each special token is one token, even glued to text
    assert tokenizer("a<|im_start|>b<|im_end|>", add_special_tokens=False)["input_ids"][1::2] == [1, 2]


def _random_text(rng: random.Random, n: int) -> str:
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x2FF), (0x370, 0x4FF), (0x4E00, 0x4FFF),
              (0x1F300, 0x1F6FF), (0xE000, 0xE0FF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def test_tokenizer_round_trips_any_unicode(tokenizer):
    fresh = build_tokenizer()
    rng = random.Random(7)
    samples = [
        "", " ", "  leading and trailing  ", "\n\n\ttabs\r\n", "e\u0301 vs \u00e9", "Zürich, São Paulo, Kraków",
        "日本語のテキスト", "emoji 👩‍👩‍👧 🇫🇷", "x = {'a': [1, 2.5e-3]}  # ok", "\x00\x01\ufeff\u200b",
        "What is 1234 + 5678? 6912.",
    ] + [_random_text(rng, rng.randint(1, 80)) for _ in range(200)]
    for text in samples:
        for tok in (tokenizer, fresh):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.decode(ids) == text, repr(text)


def test_tokenizer_is_compact_on_english_and_digits(tokenizer):
    text = "The answer is 42. What is the capital of France? The capital of France is Paris."
    assert len(tokenizer(text)["input_ids"]) < 30


# --- chat template -------------------------------------------------------------------------------


def test_template_round_trips_through_save(tokenizer):
    assert tokenizer.chat_template == builtin.chat_template()
    assert build_tokenizer().chat_template == builtin.chat_template()


def test_chatml_rendering(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATIONS[1][:3], tokenize=False)
    assert text == ("<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
                    "<|im_start|>user\nName a colour.<|im_end|>\n"
                    "<|im_start|>assistant\nBlue.<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(CONVERSATIONS[1][:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_assistant_mask_covers_exactly_assistant_content_and_im_end(tokenizer, messages):
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    runs, current = [], []
    for token, flag in zip(ids, mask):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(r) for r in runs] == expected
    assert all(r[-1] == tokenizer.eos_token_id for r in runs)
    assert sum(mask) == sum(len(tokenizer(e, add_special_tokens=False)["input_ids"]) for e in expected)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_generation_prompt_is_prefix_of_full_conversation(tokenizer, messages):
    for cut in [i for i, m in enumerate(messages) if m["role"] == "assistant"]:
        prompt = tokenizer.apply_chat_template(messages[:cut], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[:cut + 1], tokenize=False)
        assert full.startswith(prompt)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids


# --- loading and generation ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["qwen", "llama"])
def test_from_pretrained_and_generate(request, tokenizer, which):
    import torch
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(which)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.dtype == torch.float32
    enc = tokenizer.apply_chat_template(CONVERSATIONS[0][:1], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**enc).logits
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(tokenizer)
    assert out.shape[0] == 1 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 6
    assert isinstance(tokenizer.decode(out[0]), str)
