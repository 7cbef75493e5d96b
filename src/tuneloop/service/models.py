"""Resolve `--model` to a catalog entry, a built-in, or a local folder, and read its shape
without importing torch (config.json and safetensors headers)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from tuneloop.catalog import ModelEntry, load_catalog
from tuneloop.errors import ValidationError
from tuneloop.training.plan import ModelShape, shape_from_config, shape_from_parameters

GENERIC_DEFAULTS = {
    "sft": {"learning_rate": 2e-4, "learning_rate_full": 1e-5, "max_epochs": 3, "global_batch_size": 8,
            "lora_rank": 16, "lora_alpha": 32, "dataset_max_len": 2048},
    "dpo": {"learning_rate": 5e-5, "learning_rate_full": 5e-7, "max_epochs": 1, "global_batch_size": 8,
            "lora_rank": 16, "lora_alpha": 32, "dataset_max_len": 2048, "beta": 0.1},
}


@dataclass(frozen=True)
class ResolvedModel:
    id: str                      # what the user named (catalog id or absolute folder)
    source: str                  # catalog | builtin | local
    entry: ModelEntry | None     # None for a local folder outside the catalog
    note: str | None = None

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
    if catalog.get(model) is None and folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValidationError(f"Model folder {folder} has no config.json.",
                                  hint="Pass a Hugging Face model folder (config.json, *.safetensors, tokenizer).",
                                  param="model")
        if technique not in GENERIC_DEFAULTS:
            raise ValidationError(f"Technique {technique} is not available yet for models outside the catalog.",
                                  param="technique")
        return ResolvedModel(str(folder.resolve()), "local", None,
                             note=f"ℹ️  {folder} is a local model folder outside the catalog: tuneloop uses generic "
                                  "defaults for it (override them with --learning-rate, --epochs, ...).")
    entry = catalog.resolve(model, technique, training_type)
    return ResolvedModel(entry.id, "builtin" if entry.builtin else "catalog", entry)


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
