"""The Supported Model Catalog: which models tuneloop can customize, with which techniques and
training types, the dataset schema each technique expects, and per-technique default
hyperparameters.

The catalog is a JSON file shipped with the package (`catalog.json`, the seed's
`tune-catalog.json` schema plus tuneloop's own fields); `TUNELOOP_CATALOG` points at another
file. Lookups happen at runtime, so a catalog update takes effect without touching projects.

This module only uses the standard library: it must import in milliseconds.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import CatalogError

TECHNIQUES = ("sft", "dpo", "rlvr", "rlaif")
RL_TECHNIQUES = ("rlvr", "rlaif")   # GRPO with a reward: verifiable (rlvr) or an AI judge (rlaif)
TRAINING_TYPES = ("lora", "full-rank")
SCHEMA_TYPES = ("string", "array")
STALE_AFTER_DAYS = 90
CATALOG_ENV = "TUNELOOP_CATALOG"

_TRAINING_TYPE_ALIASES = {"lora": "lora", "full-rank": "full-rank", "full_rank": "full-rank", "full": "full-rank"}
_LIST_HINT = "Run 'tuneloop models' to see the techniques and training types each model supports."
_UNKNOWN_MODEL_HINT = ("For custom training workflows, pass a local model folder as --model (outside the catalog), "
                       "or run 'tuneloop models' to list supported models.")


def normalize_technique(technique: str) -> str:
    """`"SFT"` -> `"sft"`; anything that is not one of the four techniques is a CatalogError."""
    name = str(technique or "").strip().lower()
    if name not in TECHNIQUES:
        raise CatalogError(
            f'Unknown technique "{technique}". Valid techniques: {", ".join(TECHNIQUES)}.',
            details=[f"Valid techniques: {', '.join(TECHNIQUES)}"],
            hint="Use --technique " + "|".join(TECHNIQUES) + ".",
            param="technique",
        )
    return name


def normalize_training_type(training_type: str) -> str:
    """`"LoRA"` -> `"lora"`, `"full"` -> `"full-rank"`; anything else is a CatalogError."""
    name = _TRAINING_TYPE_ALIASES.get(str(training_type or "").strip().lower())
    if name is None:
        raise CatalogError(
            f'Unknown training type "{training_type}". Valid training types: {", ".join(TRAINING_TYPES)}.',
            details=[f"Valid training types: {', '.join(TRAINING_TYPES)}"],
            hint="Use --training-type " + "|".join(TRAINING_TYPES) + " (lora is the default).",
            param="training_type",
        )
    return name


@dataclass(frozen=True)
class TechniqueEntry:
    """One technique a model supports: its training types, dataset schema and defaults."""

    name: str
    training_types: tuple[str, ...]
    dataset_format: str
    required: tuple[str, ...]
    types: dict[str, str]
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_schema(self) -> dict[str, Any]:
        """The seed's `datasetSchema` shape: `{"required": [...], "types": {...}}`."""
        return {"required": list(self.required), "types": dict(self.types)}


@dataclass(frozen=True)
class ModelEntry:
    id: str
    family: str
    provider: str
    display_name: str
    hf_id: str | None
    parameters: int
    architecture: str
    chat_template: str
    lora_target_modules: tuple[str, ...]
    gated: bool
    modality: str
    builtin: bool
    default: bool
    techniques: dict[str, TechniqueEntry]

    def supports(self, technique: str, training_type: str | None = None) -> bool:
        entry = self.techniques.get(technique)
        return entry is not None and (training_type is None or training_type in entry.training_types)

    def technique(self, technique: str, training_type: str | None = None) -> TechniqueEntry:
        """The technique's entry; CatalogError when the name is invalid or the model lacks it
        (or lacks `training_type` for it)."""
        name = normalize_technique(technique)
        entry = self.techniques.get(name)
        if entry is None:
            raise CatalogError(
                f'Technique "{name}" is not supported for model "{self.id}".',
                details=[f"Supported techniques: {', '.join(self.techniques)}"],
                hint=_LIST_HINT,
                param="technique",
            )
        if training_type is not None:
            ttype = normalize_training_type(training_type)
            if ttype not in entry.training_types:
                raise CatalogError(
                    f'Training type "{ttype}" is not supported for technique "{name}" on model "{self.id}".',
                    details=[f"Supported training types: {', '.join(entry.training_types)}"],
                    hint=_LIST_HINT,
                    param="training_type",
                )
        return entry

    def default_hyperparameters(self, technique: str, training_type: str = "lora") -> dict[str, Any]:
        """The defaults for one technique and training type, ready to merge user overrides into.

        The catalog stores the LoRA learning rate as `learning_rate` and the full-rank one as
        `learning_rate_full`; this returns the right one as `learning_rate`. Full-rank drops the
        `lora_*` keys."""
        ttype = normalize_training_type(training_type)
        entry = self.technique(technique, ttype)
        hp = dict(entry.hyperparameters)
        full_lr = hp.pop("learning_rate_full", None)
        if ttype == "full-rank":
            if full_lr is not None:
                hp["learning_rate"] = full_lr
            hp = {k: v for k, v in hp.items() if not k.startswith("lora_")}
        return hp


@dataclass(frozen=True)
class Catalog:
    version: str
    last_synced: datetime.date
    source: str
    models: dict[str, ModelEntry]

    def get(self, model_id: str) -> ModelEntry | None:
        """Exact key first, then a case-insensitive match on the key or the Hugging Face id."""
        if not model_id:
            return None
        if model_id in self.models:
            return self.models[model_id]
        wanted = model_id.strip().lower()
        for entry in self.models.values():
            if entry.id.lower() == wanted or (entry.hf_id and entry.hf_id.lower() == wanted):
                return entry
        return None

    def default_model(self) -> ModelEntry:
        for entry in self.models.values():
            if entry.default:
                return entry
        for entry in self.models.values():
            if entry.builtin:
                return entry
        raise CatalogError("The model catalog names no default model.",
                           hint=f"Mark one model with \"default\": true in the catalog ({CATALOG_ENV}).")

    def require(self, model_id: str) -> ModelEntry:
        """The entry for `model_id`, or the seed's "not yet supported" CatalogError."""
        entry = self.get(model_id)
        if entry is None:
            raise CatalogError(
                f'Model "{model_id}" is not yet supported for managed customization.',
                details=["Supported model families:", *self.family_lines()],
                hint=_UNKNOWN_MODEL_HINT,
                param="model",
            )
        return entry

    def resolve(self, model_id: str, technique: str, training_type: str = "lora") -> ModelEntry:
        """Check model, then technique, then training type (the seed's order); CatalogError
        on the first that fails."""
        entry = self.require(model_id)
        entry.technique(technique, training_type)
        return entry

    def staleness_warning(self, today: datetime.date | None = None) -> str | None:
        today = today or datetime.date.today()
        age = (today - self.last_synced).days
        if age <= STALE_AFTER_DAYS:
            return None
        return (f"⚠️  The model catalog was last synced on {self.last_synced.isoformat()} ({age} days ago, "
                f"more than {STALE_AFTER_DAYS}); supported models may have changed. "
                "Upgrade tuneloop to refresh it.")

    def families(self) -> list[str]:
        """Distinct families, in catalog order."""
        return list(dict.fromkeys(entry.family for entry in self.models.values()))

    def family_lines(self) -> list[str]:
        """One `• Provider Family / Family` line per provider, as in the seed's message."""
        by_provider: dict[str, list[ModelEntry]] = {}
        for entry in self.models.values():
            by_provider.setdefault(entry.provider, []).append(entry)
        lines = []
        for provider, entries in by_provider.items():
            if all(e.builtin for e in entries):
                lines.append(f"• {provider} built-ins: " + ", ".join(e.id for e in entries))
            else:
                lines.append(f"• {provider} " + _summarize_families([e.family for e in entries]))
        return lines


def _summarize_families(families: list[str]) -> str:
    """`["Llama 3.1 Instruct", "Llama 3.2 Instruct"]` -> `"Llama 3.1 / 3.2"`;
    `["R1 Distill (Llama)", "R1 Distill (Qwen)"]` -> `"R1 Distill"`; `(VLM)` is kept."""
    short: list[str] = []
    for family in families:
        name = re.sub(r"\s+Instruct$", "", family)
        name = re.sub(r"\s*\((?!VLM\))[^)]*\)$", "", name).strip()
        if name not in short:
            short.append(name)
    parts = [name.split(" ", 1) for name in short]
    if len(parts) > 1 and all(
        len(p) == 2 and p[0] == parts[0][0] and re.fullmatch(r"[0-9.]+", p[1]) for p in parts
    ):
        return parts[0][0] + " " + " / ".join(p[1] for p in parts)
    return " / ".join(short)


# ---------------------------------------------------------------------------------------------
# Loading


def _bad(where: str, problem: str) -> CatalogError:
    return CatalogError(f"The model catalog is invalid: {where}: {problem}.",
                        hint=f"Fix the catalog file, or unset {CATALOG_ENV} to use the packaged one.")


def _parse_technique(model_id: str, name: str, raw: Any) -> TechniqueEntry:
    where = f'model "{model_id}", technique "{name}"'
    if name not in TECHNIQUES:
        raise _bad(where, f"unknown technique (valid: {', '.join(TECHNIQUES)})")
    if not isinstance(raw, dict):
        raise _bad(where, "expected an object")
    for key in ("trainingTypes", "datasetFormat", "datasetSchema"):
        if key not in raw:
            raise _bad(where, f'missing "{key}"')
    ttypes = tuple(raw["trainingTypes"])
    if not ttypes or any(t not in TRAINING_TYPES for t in ttypes):
        raise _bad(where, f"trainingTypes must be a non-empty subset of {list(TRAINING_TYPES)}")
    schema = raw["datasetSchema"]
    if not isinstance(schema, dict) or not isinstance(schema.get("required"), list):
        raise _bad(where, 'datasetSchema needs a "required" list')
    types = dict(schema.get("types") or {})
    bad_types = {col: t for col, t in types.items() if t not in SCHEMA_TYPES}
    if bad_types:
        raise _bad(where, f"datasetSchema types must be one of {list(SCHEMA_TYPES)}, got {bad_types}")
    hyper = raw.get("hyperparameters") or {}
    if not isinstance(hyper, dict):
        raise _bad(where, "hyperparameters must be an object")
    return TechniqueEntry(
        name=name,
        training_types=ttypes,
        dataset_format=str(raw["datasetFormat"]),
        required=tuple(schema["required"]),
        types=types,
        hyperparameters=dict(hyper),
    )


def _parse_model(model_id: str, raw: Any) -> ModelEntry:
    where = f'model "{model_id}"'
    if not isinstance(raw, dict):
        raise _bad(where, "expected an object")
    for key in ("family", "provider", "displayName", "techniques"):
        if key not in raw:
            raise _bad(where, f'missing "{key}"')
    if not isinstance(raw["techniques"], dict) or not raw["techniques"]:
        raise _bad(where, '"techniques" must be a non-empty object')
    techniques = {name: _parse_technique(model_id, name, t) for name, t in raw["techniques"].items()}
    return ModelEntry(
        id=model_id,
        family=str(raw["family"]),
        provider=str(raw["provider"]),
        display_name=str(raw["displayName"]),
        hf_id=raw.get("huggingFaceId") or None,
        parameters=int(raw.get("parameters") or 0),
        architecture=str(raw.get("architecture") or ""),
        chat_template=str(raw.get("chatTemplate") or ""),
        lora_target_modules=tuple(raw.get("loraTargetModules") or ()),
        gated=bool(raw.get("gated", False)),
        modality=str(raw.get("modality") or "text"),
        builtin=bool(raw.get("builtin", False)),
        default=bool(raw.get("default", False)),
        techniques=techniques,
    )


def _parse_date(value: Any) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise _bad("lastSynced", f"not an ISO date: {value!r}") from None


def parse_catalog(data: Any) -> Catalog:
    """Build a Catalog from the decoded JSON document, checking its shape."""
    if not isinstance(data, dict):
        raise _bad("top level", "expected an object")
    for key in ("version", "lastSynced", "models"):
        if key not in data:
            raise _bad("top level", f'missing "{key}"')
    if not isinstance(data["models"], dict):
        raise _bad("top level", '"models" must be an object')
    models = {mid: _parse_model(mid, raw) for mid, raw in data["models"].items()}
    return Catalog(
        version=str(data["version"]),
        last_synced=_parse_date(data["lastSynced"]),
        source=str(data.get("source") or ""),
        models=models,
    )


@functools.lru_cache(maxsize=8)
def _load(path: str | None) -> Catalog:
    try:
        if path is None:
            packaged = Path(__file__).with_name("catalog.json")
            if packaged.is_file():
                text = packaged.read_text(encoding="utf-8")
            else:  # installed in a zip or another non-file loader
                from importlib import resources

                text = resources.files("tuneloop.catalog").joinpath("catalog.json").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"Cannot read the model catalog {path or 'catalog.json'}: {exc.strerror or exc}.",
                           hint=f"Check {CATALOG_ENV}, or unset it to use the packaged catalog.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(path or "catalog.json", f"not valid JSON ({exc})") from None
    return parse_catalog(data)


def load_catalog(path: Path | str | None = None) -> Catalog:
    """The catalog at `path`, else at `$TUNELOOP_CATALOG`, else the packaged one. Cached per path."""
    chosen = path if path is not None else (os.environ.get(CATALOG_ENV) or None)
    key = str(Path(chosen).expanduser().resolve()) if chosen is not None else None
    return _load(key)


load_catalog.cache_clear = _load.cache_clear  # type: ignore[attr-defined]
