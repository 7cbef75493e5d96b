"""Built-in models: tiny checkpoints that tuneloop creates offline, byte for byte the same everywhere.

Usage::

    from tuneloop.models.builtin import ensure_builtin, is_builtin
    from tuneloop.settings import load_settings

    if is_builtin("tuneloop/tiny-qwen3"):
        folder = ensure_builtin("tuneloop/tiny-qwen3", load_settings().models_dir)
        # folder == ~/.tuneloop/models/tuneloop--tiny-qwen3, a normal Hugging Face folder:
        # AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)

The first call builds the folder (about a second for the tiny models); later calls return it as is.
Nothing is downloaded: the tokenizer is a byte-level BPE trained on the shipped `corpus.txt`, the
chat template is the shipped `chatml.jinja` (ChatML with generation markers), and the weights are
random. Building is safe when several processes ask at once (a file lock, a temporary sibling
folder, then `os.replace`).

Determinism: the sha256 of `model.safetensors` depends only on this code and the pinned library
versions. Weights are first initialised the usual way (`torch.manual_seed(seed)` then
`AutoModelForCausalLM.from_config`), then overwritten from integer random streams, because torch's
CPU `normal_` gives different bits depending on the CPU's vector unit (AVX2 vs. AVX-512 vs. ARM).
Each weight matrix gets an approximately normal draw (sum of four uniform integers, scaled once)
with std `initializer_range`, seeded from the model seed and the parameter name; norm weights
are ones, biases zeros, and the embedding row of the pad token is zero.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import NotFoundError

if TYPE_CHECKING:  # heavy imports stay lazy: `is_builtin` is called from cheap code paths
    import torch
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

VOCAB_SIZE = 4096
ENDOFTEXT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, PAD]  # ids 0, 1, 2, 3
MODEL_MAX_LENGTH = 2048
MARKER_FILE = "tuneloop_builtin.json"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class BuiltinSpec:
    model_id: str  # e.g. "tuneloop/tiny-qwen3"
    architecture: str  # "qwen3" | "llama"
    config: dict = field(hash=False)  # Qwen3Config / LlamaConfig kwargs, without vocab/special ids
    seed: int
    description: str
    # Embedding rows are drawn wider than the other weights. With the usual N(0, 0.02) a 128-wide
    # row has norm 0.23, which caps the tied head's logits near 2.6: no distribution over 4096
    # tokens can get peaked, and LoRA (which leaves the head alone) cannot learn. Rows of norm
    # ~2 behave like a trained checkpoint's and let LoRA fine-tuning visibly learn.
    embedding_std: float = 0.2


def _spec(model_id: str, architecture: str, seed: int, description: str, embedding_std: float = 0.2,
          **config: Any) -> BuiltinSpec:
    return BuiltinSpec(model_id=model_id, architecture=architecture, config=config, seed=seed,
                       description=description, embedding_std=embedding_std)


BUILTIN_MODELS: dict[str, BuiltinSpec] = {
    s.model_id: s
    for s in (
        _spec("tuneloop/tiny-qwen3", "qwen3", 1001,
              "Tiny random Qwen3 (about 1.3M parameters) for tests, demos and CPU smoke runs.",
              hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=32, intermediate_size=384, max_position_embeddings=MODEL_MAX_LENGTH,
              tie_word_embeddings=True, rms_norm_eps=1e-6),
        _spec("tuneloop/tiny-llama", "llama", 1002,
              "Tiny random Llama (about 1.8M parameters, untied head) for tests and CPU smoke runs.",
              hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              head_dim=32, intermediate_size=384, max_position_embeddings=MODEL_MAX_LENGTH,
              tie_word_embeddings=False, rms_norm_eps=1e-6),
        _spec("tuneloop/small-qwen3", "qwen3", 1003,
              "Small random Qwen3 (about 25.7M parameters) for throughput benchmarks.", embedding_std=0.1,
              hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
              head_dim=64, intermediate_size=1408, max_position_embeddings=MODEL_MAX_LENGTH,
              tie_word_embeddings=True, rms_norm_eps=1e-6),
    )
}


def is_builtin(model_id: str) -> bool:
    return model_id in BUILTIN_MODELS


def get_spec(model_id: str) -> BuiltinSpec:
    try:
        return BUILTIN_MODELS[model_id]
    except KeyError:
        raise NotFoundError(
            f"{model_id!r} is not a built-in model.",
            hint="Built-in models: " + ", ".join(BUILTIN_MODELS) + ".",
            param="model",
        ) from None


def folder_name(model_id: str) -> str:
    return model_id.replace("/", "--")


def ensure_builtin(model_id: str, models_dir: Path) -> Path:
    """Return `models_dir/<model_id with '/' -> '--'>`, building it first if it does not exist."""
    from filelock import FileLock

    spec = get_spec(model_id)
    models_dir = Path(models_dir)
    name = folder_name(model_id)
    final = models_dir / name
    if _is_current(final):
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{name}.lock")):
        if _is_current(final):  # another process built it while we waited
            return final
        for stale in models_dir.glob(f".{name}.tmp-*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if final.is_dir():  # built by an older tuneloop with other weights: rebuild
            log.warning("Rebuilding built-in model %s (older format)", model_id)
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=models_dir))
        try:
            log.info("Building built-in model %s in %s", model_id, final)
            build(spec, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _is_current(folder: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("format_version") == FORMAT_VERSION


# ----------------------------------------------------------------------------------------------
# Tokenizer


def _read_resource(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def chat_template() -> str:
    return _read_resource("chatml.jinja")


@functools.lru_cache(maxsize=1)
def _trained_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _read_resource("corpus.txt").splitlines(keepends=True)
    chunks = ["".join(lines[i:i + 64]) for i in range(0, len(lines), 64)]
    tok.train_from_iterator(chunks, trainer=trainer, length=len(chunks))
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"BPE training gave {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    return tok.to_str()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The built-in models' tokenizer: byte-level BPE (4096 tokens) with the ChatML template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json()),
        eos_token=IM_END,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[ENDOFTEXT, IM_START],
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        chat_template=chat_template(),
    )
    return tok


# ----------------------------------------------------------------------------------------------
# Model


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


_BITS = 16
_TERMS = 4
# sum of _TERMS uniform integers in [0, 2**_BITS), doubled and centred: an integer with mean 0
_CENTRED_STD = math.sqrt(_TERMS * ((1 << _BITS) ** 2 - 1) / 3.0)


def _fill_normalish_(t: torch.Tensor, std: float, seed: int) -> None:
    """Fill `t` with approximately N(0, std) values that are bit-identical on every platform.

    Only integer random draws (mt19937 via torch.randint, a serial kernel), exact integer sums,
    and one correctly rounded float64 multiply followed by a correctly rounded cast.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, 1 << _BITS, (_TERMS, t.numel()), generator=g, dtype=torch.int64)
    centred = draws.sum(0) * 2 - _TERMS * ((1 << _BITS) - 1)
    values = centred.to(torch.float64) * (std / _CENTRED_STD)
    with torch.no_grad():
        t.copy_(values.view(t.shape).to(t.dtype))


def _deterministic_init_(model: torch.nn.Module, seed: int, std: float, pad_token_id: int | None,
                         embedding_std: float | None = None) -> None:
    import torch
    from torch import nn

    with torch.no_grad():
        for name, param in model.named_parameters():  # tied parameters appear once
            module_name, _, pname = name.rpartition(".")
            module = model.get_submodule(module_name)
            if isinstance(module, (nn.Linear, nn.Embedding)) and pname == "weight":
                # the output head too: an untied lm_head caps logits the same way
                wide = embedding_std is not None and (isinstance(module, nn.Embedding) or name.startswith("lm_head."))
                _fill_normalish_(param, embedding_std if wide else std, _param_seed(seed, name))
                if isinstance(module, nn.Embedding) and pad_token_id is not None:
                    param[pad_token_id].zero_()
            elif pname == "bias":
                param.zero_()
            elif "norm" in type(module).__name__.lower() and pname == "weight":
                param.fill_(1.0)
            else:
                raise RuntimeError(f"Built-in model init: no rule for parameter {name} ({type(module).__name__})")


def build(spec: BuiltinSpec, folder: Path) -> None:
    """Write the model, generation config, tokenizer and marker file of `spec` into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen3Config
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    tokenizer = build_tokenizer()
    config_cls = {"qwen3": Qwen3Config, "llama": LlamaConfig}[spec.architecture]
    config = config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec.config,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _deterministic_init_(model, spec.seed, config.initializer_range, config.pad_token_id, spec.embedding_std)
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    quiet = hf_logging.is_progress_bar_enabled()
    if quiet:  # no "Writing model shards" bar in the middle of a CLI command
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(folder)
    n_params = sum(p.numel() for p in model.parameters())
    marker = {
        "model_id": spec.model_id,
        "architecture": spec.architecture,
        "description": spec.description,
        "parameters": n_params,
        "seed": spec.seed,
        "vocab_size": len(tokenizer),
        "format_version": FORMAT_VERSION,
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
