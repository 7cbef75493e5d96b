"""A transformers causal LM (llama, qwen2, qwen3) as one GGUF file llama.cpp and Ollama run, written
with the `gguf` package (no llama.cpp build).

    info = write_gguf(model, tokenizer, Path("out/model.gguf"), quant="q8_0")

What is written follows llama.cpp's convert_hf_to_gguf.py for these families, so that
transformers' GGUF loader (modeling_gguf_pytorch_utils.load_gguf_checkpoint) reads it back:
  - hyperparameters under `<arch>.*` (context and embedding length, blocks, feed-forward length,
    head counts, rope base, rms eps, vocab size, head size);
  - llama's Q and K rows permuted the way llama.cpp expects (its rope pairs rows i and i+d/2 of a
    head as adjacent rows); the loader's `_reverse_permute_weights` undoes exactly `_permute`
    here. qwen2/qwen3 use NeoX rope and are written as they are;
  - a tied head writes no output.weight (the loader then ties the embeddings);
  - the tokenizer as llama.cpp's "gpt2" byte-level BPE: tokens in id order (padded to the model's
    vocab size with unused [PADn]), their types (control for special added tokens), merges,
    bos/eos/pad/unk ids, add_bos/add_eos, and the chat template;
  - tensors: norms and other 1-D tensors in f32; matrices in f32, f16 or q8_0 (a matrix whose rows
    are not a multiple of q8_0's 32-value block stays f16, as llama.cpp does).
The file is written to a temporary sibling and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.export import one_of

ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2", "qwen3": "QWEN3"}  # transformers model_type -> gguf MODEL_ARCH
QUANTS = ("f16", "q8_0", "f32")
DEFAULT_QUANT = "q8_0"
_SUPPORTED = ", ".join(ARCHITECTURES)


@dataclass(frozen=True)
class GGUFInfo:
    path: str
    architecture: str
    quant: str
    tensors: int
    size_bytes: int
    tied_embeddings: bool
    pre_tokenizer: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def check_architecture(config: Any) -> str:
    """The GGUF architecture for a transformers config; ValidationError naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValidationError(f"GGUF export supports the {_SUPPORTED} architectures; this model is "
                              f"{model_type or 'of an unknown architecture'}.",
                              hint="Export it with --format merged (a safetensors folder) instead.", param="format")
    scaling = _rope_parameters(config)
    rope_type = scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ValidationError(f"GGUF export writes plain rope; this model uses {rope_type!r} rope scaling.",
                              hint="Export it with --format merged instead.", param="format")
    return model_type


def check_quant(quant: str) -> str:
    return one_of(quant, QUANTS, "GGUF quantization", "quant")


def write_gguf(model: Any, tokenizer: Any, path: Path, *, quant: str = DEFAULT_QUANT, name: str | None = None
               ) -> GGUFInfo:
    """Write `model` (a loaded transformers causal LM, adapters merged) and its tokenizer to `path`."""
    import gguf

    config = model.config
    model_type = check_architecture(config)
    check_quant(quant)
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[model_type])
    vocab = _vocab(tokenizer, config)
    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False)) or "lm_head.weight" not in state
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    try:
        _hyperparameters(writer, config, model_type, name or path.stem, quant)
        _tokenizer(writer, vocab)
        count = _tensors(writer, state, config, arch, model_type, quant, tied)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return GGUFInfo(str(path), model_type, quant, count, path.stat().st_size, tied, vocab["pre"], vocab["notes"])


# ---- hyperparameters -------------------------------------------------------------------------------

def _rope_parameters(config: Any) -> dict:
    """transformers 5 keeps rope_theta and the scaling in `rope_parameters`; older configs at the top."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params) if isinstance(params, dict) else {}


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _hyperparameters(writer: Any, config: Any, model_type: str, name: str, quant: str) -> None:
    import gguf

    # the writer names the architecture itself (general.architecture)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
    rope = _rope_parameters(config)
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    size = head_dim(config)
    writer.add_rope_dimension_count(size)   # llama: transformers reads head_dim from it
    if model_type != "llama" or size != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(size)
        writer.add_value_length(size)


# ---- tokenizer -------------------------------------------------------------------------------------

def _vocab(tokenizer: Any, config: Any) -> dict[str, Any]:
    """Tokens in id order with their types, merges, special ids and flags, from a fast tokenizer."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    if spec.get("model", {}).get("type") != "BPE":
        raise ValidationError("GGUF export writes byte-level BPE tokenizers (llama.cpp's gpt2 tokenizer model); "
                              f"this model's tokenizer is {spec.get('model', {}).get('type') or type(tokenizer).__name__}.",
                              hint="Export it with --format merged instead.", param="format")
    ids = tokenizer.get_vocab()
    size = int(config.vocab_size)
    if max(ids.values()) >= size:
        raise ValidationError(f"The tokenizer has ids up to {max(ids.values())}, past the model's vocab size {size}.",
                              param="model")
    added = {i: t for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    by_id = {i: t for t, i in ids.items()}
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    pre, notes = _pre_tokenizer(spec.get("pre_tokenizer"))

    def first(value: Any) -> int | None:
        return (value[0] if value else None) if isinstance(value, (list, tuple)) else value

    special = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id or first(config.eos_token_id),
               "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id}
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    add_bos = special["bos"] is not None and len(probe) > len(plain) and probe[0] == special["bos"]
    add_eos = special["eos"] is not None and len(probe) > len(plain) and probe[-1] == special["eos"]
    template = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else None
    return dict(tokens=tokens, types=types, merges=merges, pre=pre, notes=notes, special=special,
                add_bos=add_bos, add_eos=add_eos, chat_template=template)


# llama.cpp's pre-tokenizer names for the splits transformers' tokenizers use (its convert script
# finds them by hashing a test string's tokens; these are the structures behind the ones we meet)
_SPLITS = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def _pre_tokenizer(pre: dict | None) -> tuple[str, tuple[str, ...]]:
    """(llama.cpp pre-tokenizer name, notes) for a tokenizer.json pre_tokenizer."""
    if pre is None:
        return "default", ("the tokenizer has no pre-tokenizer; llama.cpp's default split is used",)
    parts = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt2", ()
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm", ()
    if kinds == ["Split", "ByteLevel"]:
        pattern = parts[0].get("pattern", {}).get("Regex")
        for name, regex in _SPLITS.items():
            if pattern == regex:
                return name, ()
    return "gpt2", (f"pre-tokenizer {kinds} is not one llama.cpp names; written as gpt2's split, which may "
                    "tokenize some text differently in llama.cpp",)


def _tokenizer(writer: Any, vocab: dict[str, Any]) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if vocab["special"][key] is not None:
            add(int(vocab["special"][key]))
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    writer.add_bool("tokenizer.ggml.add_space_prefix", False)
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


# ---- tensors ---------------------------------------------------------------------------------------

def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's LlamaModel.permute (transformers' _reverse_permute_weights is its inverse)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensors(writer: Any, state: dict, config: Any, arch: Any, model_type: str, quant: str, tied: bool) -> int:
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(arch, int(config.num_hidden_layers))
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    count = 0
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        base, _, suffix = hf_name.rpartition(".")
        mapped = names.get_name(base)
        if mapped is None:
            raise ValidationError(f"GGUF export does not know where tensor {hf_name} goes in a {model_type} GGUF.",
                                  hint="Export it with --format merged instead.", param="format")
        data = tensor.detach().to("cpu").float().numpy()
        if model_type == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute(data, heads, heads)
        elif model_type == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute(data, heads, kv_heads)
        data = np.ascontiguousarray(data)
        if data.ndim == 1 or quant == "f32":
            writer.add_tensor(f"{mapped}.{suffix}", data.astype(np.float32))
        elif quant == "q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(f"{mapped}.{suffix}", gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(f"{mapped}.{suffix}", data.astype(np.float16))
        count += 1
    return count
