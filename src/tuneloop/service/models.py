"""Resolve `--model` to a catalog entry, a built-in, or a local folder, and read its shape
without importing torch (config.json and safetensors headers). A local folder must hold
safetensors weights: pickled ones (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`) are refused here, before
any job exists, because unpickling a file can run code; loaders pass `use_safetensors=True`."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from tuneloop.catalog import ModelEntry, load_catalog
from tuneloop.errors import ValidationError
from tuneloop.models.weights import check_weights
from tuneloop.training.plan import ModelShape, shape_from_config, shape_from_parameters

GENERIC_DEFAULTS = {
    "sft": {"learning_rate": 2e-4, "learning_rate_full": 1e-5, "max_epochs": 3, "global_batch_size": 8,
            "lora_rank": 16, "lora_alpha": 32, "dataset_max_len": 2048},
    "dpo": {"learning_rate": 5e-5, "learning_rate_full": 5e-7, "max_epochs": 1, "global_batch_size": 8,
            "lora_rank": 16, "lora_alpha": 32, "dataset_max_len": 2048, "beta": 0.1},
    "rlvr": {"learning_rate": 1e-5, "learning_rate_full": 1e-6, "max_epochs": 1, "global_batch_size": 32,
             "lora_rank": 16, "lora_alpha": 32, "dataset_max_len": 2048, "max_prompt_length": 1024,
             "max_response_length": 1024, "num_generations": 8, "temperature": 1.0, "kl_loss_coef": 0.001},
}
GENERIC_DEFAULTS["rlaif"] = dict(GENERIC_DEFAULTS["rlvr"])


@dataclass(frozen=True)
class ResolvedModel:
    id: str                      # what the user named (catalog id or absolute folder)
    source: str                  # catalog | builtin | local
    entry: ModelEntry | None     # None for a local folder outside the catalog
    note: str | None = None
    base_path: str | None = None  # source "adapter": the base model folder the adapter was trained on

    def defaults(self, technique: str, training_type: str) -> dict:
        if self.entry is not None:
            return self.entry.default_hyperparameters(technique, training_type)
        hp = dict(GENERIC_DEFAULTS.get(technique, GENERIC_DEFAULTS["sft"]))
        full_lr = hp.pop("learning_rate_full")
        if training_type == "full-rank":
            hp["learning_rate"] = full_lr
            hp = {k: v for k, v in hp.items() if not k.startswith("lora_")}
        return hp

    @property
    def lora_targets(self) -> list[str] | None:
        return list(self.entry.lora_target_modules) if self.entry and self.entry.lora_target_modules else None


def resolve_model(model: str | None, technique: str, training_type: str) -> ResolvedModel:
    """Catalog first (the seed's order: model, technique, training type); a folder with a
    config.json is accepted outside the catalog."""
    catalog = load_catalog()
    if not model:
        entry = catalog.default_model()
        entry.technique(technique, training_type)
        return ResolvedModel(entry.id, "builtin" if entry.builtin else "catalog", entry)
    folder = Path(model).expanduser()
    if catalog.get(model) is None and folder.is_dir() and (folder / "adapter_config.json").is_file():
        return _resolve_adapter(folder, technique, training_type)
    if catalog.get(model) is None and folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValidationError(f"Model folder {folder} has no config.json.",
                                  hint="Pass a Hugging Face model folder (config.json, *.safetensors, tokenizer).",
                                  param="model")
        check_weights(folder)
        base = _tuned_from(folder, ("manifest.json",)) if technique in ("rlvr", "rlaif") else None
        if base is not None:  # a tuneloop full-rank output: RL continues from it with its base's defaults
            base.technique(technique, training_type)
            return ResolvedModel(str(folder.resolve()), "local", base,
                                 note=f"ℹ️  Continuing from {folder} (a {base.id} fine-tune)")
        if technique not in GENERIC_DEFAULTS:
            raise ValidationError(f"Technique {technique} is not available yet for models outside the catalog.",
                                  param="technique")
        return ResolvedModel(str(folder.resolve()), "local", None,
                             note=f"ℹ️  {folder} is a local model folder outside the catalog: tuneloop uses generic "
                                  "defaults for it (override them with --learning-rate, --epochs, ...).")
    entry = catalog.resolve(model, technique, training_type)
    return ResolvedModel(entry.id, "builtin" if entry.builtin else "catalog", entry)


def _tuned_from(folder: Path, files: tuple[str, ...] = ("manifest.json", "tuneloop_builtin.json")) -> ModelEntry | None:
    """The catalog entry a tuneloop output (manifest.json) or built-in folder was made from."""
    catalog = load_catalog()
    keys = {"manifest.json": "base_model", "tuneloop_builtin.json": "model_id"}
    for name in files:
        key = keys[name]
        try:
            value = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and catalog.get(value) is not None:
            return catalog.get(value)
    return None


def _resolve_adapter(folder: Path, technique: str, training_type: str) -> ResolvedModel:
    """A PEFT adapter folder (e.g. a finished LoRA job's output) as the starting point of an RL job:
    the adapter keeps training (LoRA) or is merged into its base first (full-rank)."""
    if technique not in ("rlvr", "rlaif"):
        raise ValidationError(f"Continuing from an adapter folder is available for rlvr and rlaif; {folder} is an "
                              f"adapter and this job is {technique}.",
                              hint="Pass the base model as --model, or a full-rank output folder.", param="model")
    check_weights(folder, adapter=True)
    try:
        base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError):
        raise ValidationError(f"{folder}/adapter_config.json does not name its base model "
                              "(base_model_name_or_path).", param="model") from None
    base_dir = Path(str(base_path)).expanduser()
    if base_dir.is_dir():
        check_weights(base_dir)
    entry = _tuned_from(folder) or (_tuned_from(base_dir) if base_dir.is_dir() else None) \
        or load_catalog().get(str(base_path))
    if not base_dir.is_dir() and entry is None:
        raise ValidationError(f"The base model of adapter {folder} ({base_path}) is not on this machine.",
                              param="model")
    if entry is not None:
        entry.technique(technique, training_type)
    base = str(base_dir.resolve()) if base_dir.is_dir() else str(base_path)
    return ResolvedModel(str(folder.resolve()), "adapter", entry, base_path=base,
                         note=f"ℹ️  Continuing from the adapter {folder} (base {entry.id if entry else base})")


def count_safetensors_parameters(folder: Path) -> int:
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for d in meta["shape"]:
                    count *= d
                total += count
    return total


def model_shape(folder: Path | None, parameters: int) -> ModelShape:
    if folder is not None and (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        return shape_from_config(config, count_safetensors_parameters(folder) or parameters)
    return shape_from_parameters(parameters)
