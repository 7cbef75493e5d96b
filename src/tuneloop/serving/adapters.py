"""Checks of what gets deployed, before anything loads (no torch: safetensors headers only).

    info = check_adapter("/path/to/adapter", base_name="tuneloop/tiny-qwen3", base_folder=folder)
    info.warnings         # e.g. the adapter names another base model, but its shapes fit this one
    check_full_model("/path/to/model")          # an inference component or a new base

An adapter folder must hold `adapter_config.json` (peft_type LORA) and
`adapter_model.safetensors`; every LoRA pair must target a Linear weight the base has, with
matching input and output sizes, and its rank must be what the config says. Pickle weights
(`*.bin`, `*.pt`) are refused: unpickling can run code. A full model folder is refused with a
pointer to `add-ic`, an adapter given as a full model with a pointer to `adapter add`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import AdapterError

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB]|embedding_[AB])(?:\.[^.]+)?\.weight$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "LoRA bias", "modules_to_save": "modules_to_save (fully trained "
               "extra layers)", "trainable_token_indices": "trainable tokens", "layer_replication": "layer replication",
               "target_parameters": "target_parameters", "fan_in_fan_out": "fan_in_fan_out (Conv1D layers)"}


@dataclass
class AdapterInfo:
    path: Path
    rank: int
    alpha: float
    target_modules: list[str]
    modules: list[str]                 # modules the weights touch, e.g. model.layers.0.self_attn.q_proj
    base_model: str | None             # what adapter_config.json (or tuneloop's manifest) names
    warnings: list[str] = field(default_factory=list)


@dataclass
class ModelInfo:
    path: Path
    model_type: str | None
    architectures: list[str]


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {"dtype", "shape"} from a .safetensors file's JSON header."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header


def weight_shapes(folder: Path) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for f in sorted(folder.glob("*.safetensors")):
        shapes.update({k: v["shape"] for k, v in read_safetensors_header(f).items()})
    return shapes


def _pickle_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)


def _refuse_pickle(folder: Path, what: str) -> None:
    pickles = _pickle_files(folder)
    raise AdapterError(
        f"{folder} holds only pickle weights ({', '.join(pickles)}): tuneloop loads safetensors only, "
        "because unpickling a file can run code.", param="weights",
        hint=f"Convert the {what} on a machine where you trust the file, then deploy the folder again:\n"
             "  python -c \"import sys, torch, safetensors.torch as s; "
             "s.save_file(torch.load(sys.argv[1], weights_only=True), sys.argv[2])\" "
             f"{shlex.quote(str(folder / pickles[0]))} "
             f"{shlex.quote(str(folder / ('adapter_model.safetensors' if what == 'adapter' else 'model.safetensors')))}")


def _folder(path: str | Path, param: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise AdapterError(f"{folder} does not exist.", param=param,
                           hint="Pass the folder a tune job wrote (tuneloop status JOB shows output_path).")
    if not folder.is_dir():
        raise AdapterError(f"{folder} is a file, not a folder.", param=param,
                           hint="Pass the folder that holds the weights (or a .tar.gz archive of it).")
    return folder.resolve()


def _manifest_base(folder: Path) -> str | None:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("base_model")
    except (OSError, ValueError):
        return None


def same_base(recorded: list[str | None], base_name: str, base_folder: Path | None) -> bool:
    """Whether an adapter's recorded base is the deployed base: the same id, the same folder, or a
    built-in's folder in another models directory (`.../tuneloop--tiny-qwen3`)."""
    recorded = [r for r in recorded if r]
    if not recorded:
        return True  # nothing recorded: nothing to compare
    keys = {base_name, base_name.replace("/", "--")}
    if base_folder is not None:
        keys |= {base_folder.name, str(base_folder)}
    for r in recorded:
        p = Path(r)
        if r in keys or p.name in keys or (base_folder is not None and p.is_dir() and p.resolve() == base_folder):
            return True
    return False


def check_adapter(path: str | Path, *, base_name: str, base_folder: Path | None) -> AdapterInfo:
    """Refuse what cannot load on the deployed base; warn about what loads but may be wrong."""
    folder = _folder(path, "lora_path")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        if (folder / "config.json").is_file():
            raise AdapterError(f"{folder} is a full model (config.json, no adapter_config.json), not a LoRA adapter.",
                               param="lora_path", hint="Serve it as its own model instead:\n"
                                                       f"  tuneloop add-ic NAME --model-data {folder}")
        raise AdapterError(f"{folder} has no adapter_config.json: it is not a PEFT adapter folder.", param="lora_path",
                           hint="An adapter folder holds adapter_config.json and adapter_model.safetensors "
                                "(what a LoRA tune job writes to its output folder).")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        raise AdapterError(f"{config_file} is not valid JSON: {e}", param="lora_path") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{folder} is a {config.get('peft_type')} adapter; only LoRA adapters are served.",
                           param="lora_path")
    used = [label for key, label in UNSUPPORTED.items() if config.get(key)]
    if config.get("bias", "none") != "none":
        used.append(f"bias={config['bias']}")
    if used:
        raise AdapterError(f"{folder} uses {', '.join(used)}, which the embedded engine does not serve.",
                           param="lora_path", hint="Merge the adapter into its base (peft merge_and_unload), save "
                                                   "it, and serve that with: tuneloop add-ic NAME --model-data DIR")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        if _pickle_files(folder):
            _refuse_pickle(folder, "adapter")
        raise AdapterError(f"{folder} has no adapter_model.safetensors.", param="lora_path",
                           hint="Save the adapter with PeftModel.save_pretrained(dir) (safetensors is the default).")
    tensors = read_safetensors_header(weights)
    pairs: dict[str, dict[str, list[int]]] = {}
    for key, meta in tensors.items():
        m = _KEY.match(key)
        if m is None:
            continue
        if m["ab"].startswith("embedding"):
            raise AdapterError(f"{folder} has LoRA on an embedding ({m['module']}); the embedded engine serves "
                               "LoRA on Linear layers only.", param="lora_path")
        pairs.setdefault(m["module"], {})[m["ab"]] = meta["shape"]
    if not pairs:
        raise AdapterError(f"{weights} holds no LoRA weights (lora_A / lora_B tensors).", param="lora_path")
    rank = int(config.get("r", 0))
    problems: list[str] = []
    ranks = set()
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            problems.append(f"{module}: lora_A or lora_B is missing")
            continue
        (r_a, _), (_, r_b) = ab["A"], ab["B"]
        expected = _pattern_rank(config, module, rank)
        if r_a != r_b or r_a != expected:
            problems.append(f"{module}: rank {r_a}/{r_b} in the weights, {expected} in adapter_config.json")
        ranks.add(r_a)
    if problems:
        raise AdapterError(f"{folder} is inconsistent with its adapter_config.json.", details=problems[:5],
                           param="lora_path")
    named, manifest_base = config.get("base_model_name_or_path"), _manifest_base(folder)
    trained_on = manifest_base or named
    info = AdapterInfo(path=folder, rank=max(ranks), alpha=float(config.get("lora_alpha", rank)),
                       target_modules=_targets(config), modules=sorted(pairs), base_model=trained_on)
    if base_folder is not None and base_folder.is_dir():
        _check_fits(info, pairs, base_name, base_folder, trained_on)
    else:
        info.warnings.append(f"⚠️  The base {base_name} is not on this machine yet, so the adapter's shapes were not "
                             "checked against it; the server checks them when it loads the adapter.")
    if not same_base([named, manifest_base], base_name, base_folder):
        info.warnings.append(f"⚠️  {folder.name} was trained on {trained_on}, but the deployment serves {base_name}. "
                             "Its shapes fit, so it loads; its answers may not be what it learned.")
    return info


def _pattern_rank(config: dict[str, Any], module: str, default: int) -> int:
    for key, value in (config.get("rank_pattern") or {}).items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return int(value)
    return default


def _targets(config: dict[str, Any]) -> list[str]:
    t = config.get("target_modules")
    return [t] if isinstance(t, str) else sorted(t or [])


def _check_fits(info: AdapterInfo, pairs: dict[str, dict[str, list[int]]], base_name: str, base_folder: Path,
                trained_on: str | None) -> None:
    shapes = weight_shapes(base_folder)
    missing, wrong = [], []
    for module, ab in sorted(pairs.items()):
        w = shapes.get(f"{module}.weight")
        if w is None:
            missing.append(module)
            continue
        (_, fan_in), (fan_out, _) = ab["A"], ab["B"]
        if len(w) != 2 or w[1] != fan_in or w[0] != fan_out:
            wrong.append(f"{module}: adapter {fan_in} -> {fan_out}, base {w[1] if len(w) == 2 else w} -> "
                         f"{w[0] if len(w) == 2 else ''}")
    other = f" (it was trained on {trained_on})" if trained_on else ""
    hint = (f"Serve it on the base it was trained on: tuneloop deploy --model {trained_on}" if trained_on
            else "Serve it on the base it was trained on (tuneloop deploy --model BASE).")
    if missing:
        raise AdapterError(f"{info.path} targets modules the base {base_name} does not have{other}.",
                           details=missing[:5] + ([f"... and {len(missing) - 5} more"] if len(missing) > 5 else []),
                           param="lora_path", hint=hint)
    if wrong:
        raise AdapterError(f"{info.path} does not fit the base {base_name}{other}: layer sizes differ.",
                           details=wrong[:5] + ([f"... and {len(wrong) - 5} more"] if len(wrong) > 5 else []),
                           param="lora_path", hint=hint)


def check_full_model(path: str | Path, param: str = "model_path") -> ModelInfo:
    """A full model folder: config.json, safetensors weights, a tokenizer; not an adapter."""
    folder = _folder(path, param)
    if (folder / "adapter_config.json").is_file():
        raise AdapterError(f"{folder} is a LoRA adapter, not a full model.", param=param,
                           hint=f"Deploy it on the base model instead:\n  tuneloop adapter add NAME --weights {folder}")
    if not (folder / "config.json").is_file():
        raise AdapterError(f"{folder} has no config.json: it is not a model folder.", param=param,
                           hint="A full model folder holds config.json, *.safetensors and the tokenizer files "
                                "(what a full-rank tune job writes to its output folder).")
    if not list(folder.glob("*.safetensors")):
        if _pickle_files(folder):
            _refuse_pickle(folder, "model")
        raise AdapterError(f"{folder} has no *.safetensors weights.", param=param)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise AdapterError(f"{folder} has no tokenizer files.", param=param,
                           hint="Save the tokenizer beside the weights: tokenizer.save_pretrained(dir).")
    config = json.loads((folder / "config.json").read_text())
    return ModelInfo(path=folder, model_type=config.get("model_type"), architectures=config.get("architectures") or [])


def localize(source: str, cache_dir: Path) -> Path:
    """A folder to load from: a local folder as is; a .tar.gz archive or a URL (s3://, ...,
    through fsspec) copied once into `cache_dir/<sha256 of the source>/`."""
    if "://" not in source and not source.endswith((".tar.gz", ".tgz", ".tar")):
        return Path(source).expanduser()
    target = cache_dir / hashlib.sha256(source.encode()).hexdigest()[:16]
    if target.is_dir():
        return _single_child(target)
    tmp = target.with_name(target.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    local = source
    if "://" in source:
        import fsspec

        try:
            fs, remote = fsspec.core.url_to_fs(source)
            if fs.isdir(remote):
                fs.get(remote.rstrip("/") + "/", str(tmp), recursive=True)
                local = ""
            else:
                local = str(tmp / Path(remote).name)
                fs.get(remote, local)
        except Exception as e:
            raise AdapterError(f"Cannot copy {source}: {e}", param="weights") from None
    if local:
        if not Path(local).is_file():
            raise AdapterError(f"{source} does not exist.", param="weights")
        if local.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(local) as tar:
                tar.extractall(tmp, filter="data")  # no absolute paths, links out, or devices
            if local.startswith(str(tmp)):
                Path(local).unlink()
    tmp.rename(target)
    return _single_child(target)


def _single_child(folder: Path) -> Path:
    """An archive of one folder (adapter/...) unpacks to that folder."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
