"""GGUF files as models: the header read without torch, and one conversion into a plain Hugging
Face safetensors folder that every later job, evaluation, judge and server reuses.

    info = read_header(Path("model.gguf"))         # architecture, shape, types; ValidationError if unusable
    sha = file_sha256(Path("model.gguf"), models_dir)   # the file's identity (memoised for big files)
    folder = ensure_converted(Path("model.gguf"), cache_folder(models_dir, sha), sha)

The folder is `<models_dir>/gguf/<sha256 of the file>/`: config.json, model.safetensors (the
weights as transformers dequantizes them: float32 for quantized types, the file's own float type
otherwise), the tokenizer with the chat template from the GGUF metadata, generation_config.json,
and `tuneloop_gguf.json` naming the source (path, size, sha256, GGUF type). It is written into a
temporary sibling and renamed into place under a file lock, so a killed conversion leaves no
half-written folder (the next one sweeps the leftover) and two jobs asking at once convert once.

The identity is the sha256 of the file's bytes (about 0.07 s for 98 MB from the page cache), so a
renamed or copied GGUF reuses its folder and a changed one gets a new one. Files up to
`VERIFY_MAX_BYTES` are hashed every time; bigger ones are memoised by (path, size, mtime) in
`<models_dir>/gguf/identities.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneloop.errors import ValidationError
from tuneloop.processes import pid_alive

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
MARKER_FILE = "tuneloop_gguf.json"
FORMAT_VERSION = 1
VERIFY_MAX_BYTES = 1 << 30           # hash files up to 1 GiB on every use; memoise bigger ones
# llama.cpp's architecture names that transformers' GGUF loader knows under another name
_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
            "t5encoder": "t5"}
_HINT = ("Pass a GGUF file of an architecture transformers reads (llama, mistral, qwen2, qwen3, gemma, phi3, ...), "
         "or convert the model to a Hugging Face folder (config.json, *.safetensors, tokenizer) and pass the folder.")


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says: enough to plan a job without converting it."""

    architecture: str
    name: str | None
    file_type: str                   # llama.cpp's file type (MOSTLY_Q4_1, ...), or the tensor types
    tensor_types: tuple[str, ...]
    parameters: int
    layers: int
    hidden: int
    vocab: int
    heads: int
    context_length: int
    chat_template: bool

    def to_dict(self) -> dict:
        return asdict(self)


def looks_like_gguf(path: Path) -> bool:
    """A file named *.gguf or starting with the GGUF magic."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def supported_architecture(architecture: str) -> bool:
    """Whether transformers' GGUF loader reads `architecture` (its legacy table needs no torch;
    the newer loader's few architectures are only asked about when the table lacks one)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if architecture in GGUF_CONFIG_MAPPING or _ALIASES.get(architecture) in GGUF_CONFIG_MAPPING:
        return True
    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS
    except ImportError:  # an older transformers: the legacy table is all there is
        return False
    return architecture in GGUF_ARCHS


def read_header(path: Path) -> GGUFInfo:
    """The header of `path`, checked: the magic, every tensor inside the file, a known architecture."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        size = path.stat().st_size
    except OSError as e:
        raise ValidationError(f"Cannot read the GGUF file {path}: {e.strerror or e}.", param="model") from None
    if magic != MAGIC:
        raise ValidationError(f"{path} is not a GGUF file: it starts with {magic!r}, not {MAGIC!r}.",
                              hint="Pass a .gguf file as llama.cpp writes it, or a Hugging Face model folder.",
                              param="model")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
        tensors = list(reader.tensors)
    except Exception as e:  # noqa: BLE001 - a damaged header raises anything from struct to numpy
        raise ValidationError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); it may be truncated "
                              "or damaged.", hint="Download or copy the file again.", param="model") from None
    end = max((t.data_offset + int(t.n_bytes) for t in tensors), default=0)
    if not tensors or end > size or any(t.data.size * t.data.itemsize < int(t.n_bytes) for t in tensors):
        raise ValidationError(f"{path} is truncated: its tensors need {end} bytes, the file has {size}.",
                              hint="Download or copy the file again.", param="model")
    fields = {name: _value(f) for name, f in reader.fields.items()
              if not name.startswith("tokenizer.ggml.") or name.endswith(("model", "_id"))}
    arch = str(fields.get("general.architecture") or "")
    if not arch:
        raise ValidationError(f"{path} does not name its architecture (general.architecture).", hint=_HINT,
                              param="model")
    if not supported_architecture(arch):
        raise ValidationError(f"{path} is a {arch!r} model, an architecture transformers cannot read from GGUF.",
                              hint=_HINT, param="model")
    tensor_types = tuple(sorted({t.tensor_type.name for t in tensors}))
    parameters = sum(int(t.n_elements) for t in tensors)
    vocab = int(fields.get(f"{arch}.vocab_size") or 0) or \
        next((int(t.shape[-1]) for t in tensors if t.name == "token_embd.weight"), 0)
    return GGUFInfo(architecture=arch, name=fields.get("general.name"), file_type=_file_type(fields, tensor_types),
                    tensor_types=tensor_types, parameters=parameters,
                    layers=int(fields.get(f"{arch}.block_count") or 0),
                    hidden=int(fields.get(f"{arch}.embedding_length") or 0), vocab=vocab,
                    heads=int(fields.get(f"{arch}.attention.head_count") or 0),
                    context_length=int(fields.get(f"{arch}.context_length") or 0),
                    chat_template="tokenizer.chat_template" in reader.fields)


def _value(field):
    try:
        value = field.contents()
    except Exception:  # noqa: BLE001 - an odd field is left out, not fatal
        return None
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _file_type(fields: dict, tensor_types: tuple[str, ...]) -> str:
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(fields["general.file_type"])).name
    except (KeyError, ValueError, TypeError):
        return "+".join(tensor_types)


# ---- identity ---------------------------------------------------------------------------------
def cache_folder(models_dir: Path, sha256: str) -> Path:
    return Path(models_dir) / "gguf" / sha256


def file_sha256(path: Path, models_dir: Path) -> str:
    """The sha256 of the file's bytes; a big file's is memoised by (real path, size, mtime)."""
    st = path.stat()
    key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns]
    memo = Path(models_dir) / "gguf" / "identities.json"
    if st.st_size > VERIFY_MAX_BYTES:
        try:
            known = json.loads(memo.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            known = None
        if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    sha = digest.hexdigest()
    if st.st_size > VERIFY_MAX_BYTES:
        _remember(memo, key, {"stamp": stamp, "sha256": sha})
    return sha


def _remember(memo: Path, key: str, value: dict) -> None:
    try:
        known = json.loads(memo.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[key] = value
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, memo)  # a lost race loses one memo entry, never corrupts the file


def converted(folder: Path) -> dict | None:
    """The marker of a finished conversion in `folder`, or None."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT_VERSION else None


# ---- conversion -------------------------------------------------------------------------------
def ensure_converted(source: Path, folder: Path, sha256: str, info: GGUFInfo | None = None) -> Path:
    """`folder`, converting `source` into it first unless a finished conversion is there."""
    folder = Path(folder)
    if converted(folder):
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if converted(folder):  # another process converted it while this one waited
            return folder
        _sweep(folder.parent)
        if folder.exists():    # a folder without its marker is not ours to trust
            shutil.rmtree(folder)
        info = info or read_header(source)
        tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            dtype = _convert(source, tmp)
            stat = source.stat()
            marker = {"format": FORMAT_VERSION, "source": str(source.resolve()), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns, "sha256": sha256, "gguf_type": info.file_type,
                      "architecture": info.architecture, "dtype": dtype, "header": info.to_dict()}
            (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s into %s", source, folder)
    return folder


def _sweep(parent: Path) -> None:
    """Remove the temporary folders of conversions whose process is gone (killed mid-way)."""
    for tmp in parent.glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _convert(source: Path, out: Path) -> str:
    """Load `source` with transformers' GGUF loader (dequantizing) and save it as a plain folder;
    returns the weights' dtype."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    where, name = str(source.parent), source.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, trust_remote_code=False)
    except (ValueError, NotImplementedError, KeyError, TypeError, RuntimeError, OSError) as e:
        raise ValidationError(f"transformers could not load the GGUF file {source}: {type(e).__name__}: {e}",
                              hint=_HINT, param="model") from None
    # the weights are dequantized, plain tensors now: save them as a normal model, not as "quantized with gguf"
    model.hf_quantizer = None
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
    model.config._name_or_path = str(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not list(out.glob("*.safetensors")):
        raise ValidationError(f"Converting {source} wrote no safetensors weights.", hint=_HINT, param="model")
    return str(model.dtype).removeprefix("torch.")
