"""Which model a reference names: the one answer training, evaluation, judging and serving use.

    ref = resolve("tuneloop/tiny-qwen3", technique="sft", training_type="lora")   # tune: checked
    ref = resolve("out/adapter", use="eval")             # ref.base (its base model), ref.adapter
    ref = resolve("sft", use="eval", lookups=lookups)    # the project's latest sft job's output
    ref.load_path()      # what from_pretrained takes (a built-in is built the first time)
    ref.local_folder()   # the base's folder on this machine, or None (a Hub model not in the cache)

A reference is, in this order:
  nothing                the catalog's default model
  a catalog id           a catalog model (its Hub id) or a built-in (built offline in models_dir)
  a folder               a model folder (config.json) or a PEFT adapter folder (adapter_config.json);
                         its weights must be safetensors (weights.check_weights)
  GROUP@vN               a registered version's output folder
  a deployed name        the folder `tuneloop serve` serves under that name
  a technique or a job   the technique's latest job, or the job of that name: its output folder
The last three need `lookups` (`ModelLookups`), which the service layer builds from the store:
nothing here opens it. Without lookups they are not references.

`use` names who asks; their checks and error messages differ, the order above does not:
  tune   a technique and training type are checked against the catalog entry; adapter folders
         continue RL jobs only; an RL job continues a tuneloop full-rank output with its base's
         defaults; an unknown name gets the catalog's "not yet supported" error
  eval   any model or adapter folder; an adapter's base may be a Hub id
  judge  like eval (rewards.judge turns the errors into ValueError, a reward's config error)
  serve  folders are taken as they are: the server checks them itself (serving.adapters)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneloop.catalog import RL_TECHNIQUES, TECHNIQUES, ModelEntry, load_catalog
from tuneloop.errors import ValidationError
from tuneloop.models.weights import check_weights

USES = ("tune", "eval", "judge", "serve")


@dataclass(frozen=True)
class JobOutput:
    """What `ModelLookups.job_output` finds: a job and its output folder (None until it has one)."""

    id: str
    state: str
    output_path: str | None


@dataclass(frozen=True)
class ModelLookups:
    """The store's answers the resolver needs, passed in (the service layer: service.models.store_lookups)."""

    job_output: Callable[[str, str | None], JobOutput | None]   # (job name or technique, project)
    package_version: Callable[[str, str], str | None]           # (group, version) -> output folder
    deployed: Callable[[str | None, str], str | None]           # (project, name) -> folder


@dataclass(frozen=True)
class ModelRef:
    """What a reference resolved to, once."""

    id: str                          # in specs and job rows: the catalog id, else the absolute folder
    kind: str                        # catalog | builtin | local | adapter: what the weights are
    base: str                        # the base weights: a folder (a built-in's, built by load_path) or a Hub id
    name: str                        # what users see: the catalog id, the job's id, or the reference as given
    via: str                         # how it was found: default | catalog | folder | package | deployed | job
    adapter: str | None = None       # a PEFT adapter folder on top of `base`
    entry: ModelEntry | None = None  # the catalog entry (of the base, for tuneloop outputs and adapters)
    builtin: bool = False            # `base` is a built-in's folder: load_path builds it first
    notes: tuple[str, ...] = field(default=())

    @property
    def lora_targets(self) -> list[str] | None:
        return list(self.entry.lora_target_modules) if self.entry and self.entry.lora_target_modules else None

    def load_path(self) -> str:
        """The base as from_pretrained takes it: a folder or a Hub id (a built-in is built first)."""
        if self.builtin:
            from tuneloop.models.builtin import ensure_builtin

            return str(ensure_builtin(self.entry.id, Path(self.base).parent))  # base is models_dir/<name>
        return self.base

    def local_folder(self) -> Path | None:
        """The base's folder on this machine (config, tokenizer), or None: a Hub model not in the cache."""
        if self.builtin:
            return Path(self.load_path())
        if Path(self.base).is_dir():
            return Path(self.base)
        from tuneloop.models.hub import cached_folder

        return cached_folder(self.base)


def resolve(ref: str | None, *, use: str = "tune", technique: str | None = None, training_type: str = "lora",
            project: str | None = None, lookups: ModelLookups | None = None,
            models_dir: Path | None = None) -> ModelRef:
    """The model `ref` names, for `use` (see the module docstring); `technique` is already normalized."""
    assert use in USES, use
    if models_dir is None:
        from tuneloop.settings import load_settings

        models_dir = load_settings().models_dir
    ctx = _Context(use, technique, training_type, Path(models_dir))
    catalog = load_catalog()
    if not ref:
        return ctx.catalog(catalog.default_model(), "default")
    entry = catalog.get(ref)
    if entry is not None:
        return ctx.catalog(entry, "catalog")
    folder = Path(ref).expanduser()
    if folder.is_dir():
        return ctx.folder(folder, ref, "folder")
    found = _lookup(ref, project, lookups, use) if lookups is not None else None
    if found is not None:
        return ctx.folder(*found)
    if use == "tune":
        catalog.require(ref)  # raises the catalog's "not yet supported" error, with the families
    message, hint = _UNKNOWN[use]
    raise ValidationError(message.format(ref=ref), hint=hint, param="model")


_UNKNOWN = {  # use -> (message, hint) when a reference names nothing; tune: the catalog's error
    "eval": ("Model {ref!r} is not a folder, a job, a registered version (GROUP@vN), a deployed name or a "
             "catalog model.",
             "See: tuneloop status | tuneloop registry list | tuneloop adapter list | tuneloop models"),
    "judge": ("judge {ref!r} is not a catalog model, a built-in, a model folder or openai:MODEL@URL", None),
    "serve": ('Model "{ref}" is neither in the catalog nor a model folder.', "List models with: tuneloop models"),
}
_NEITHER = {  # use -> (message, hint) for a folder that is neither a model nor an adapter
    "tune": ("Model folder {folder} has no config.json.",
             "Pass a Hugging Face model folder (config.json, *.safetensors, tokenizer)."),
    "eval": ("{folder} is neither a model folder (config.json) nor an adapter (adapter_config.json).", None),
    "judge": ("judge folder {folder} has neither config.json nor adapter_config.json", None),
}
_UNFINISHED = {  # use -> message for a job without a completed output
    "tune": "Job {id} has no output to continue from (it is {state}).",
    "eval": "Job {id} is {state}; only a completed job's output can be evaluated.",
}


def _lookup(ref: str, project: str | None, lookups: ModelLookups, use: str) -> tuple[Path, str, str] | None:
    """(folder, user-facing name, via) of GROUP@vN, a deployed name, a technique or a job name."""
    if "@v" in ref:
        group, _, version = ref.rpartition("@v")
        path = lookups.package_version(group, version)
        if path is None:
            raise ValidationError(f"No registered version {ref!r}.", hint="List them with: tuneloop registry list",
                                  param="model")
        return Path(path), ref, "package"
    path = lookups.deployed(project, ref)
    if path is not None:  # a name served by `tuneloop serve` (adapter add / add-ic)
        return Path(path), ref, "deployed"
    job = lookups.job_output(ref.lower() if ref.lower() in TECHNIQUES else ref, project)
    if job is None:
        return None
    if job.state != "completed" or not job.output_path:
        raise ValidationError(_UNFINISHED.get(use, _UNFINISHED["eval"]).format(id=job.id, state=job.state),
                              param="model")
    return Path(job.output_path), job.id, "job"


@dataclass(frozen=True)
class _Context:
    use: str
    technique: str | None
    training_type: str
    models_dir: Path

    @property
    def tune(self) -> bool:
        return self.use == "tune"

    def check(self, entry: ModelEntry) -> None:
        """tune: the entry offers the technique and training type (CatalogError otherwise)."""
        if self.tune and self.technique is not None:
            entry.technique(self.technique, self.training_type)

    def weights(self, entry: ModelEntry) -> tuple[str, bool]:
        """(base, builtin) of a catalog entry: a built-in's folder (built on load) or the Hub id."""
        if entry.builtin:
            from tuneloop.models.builtin import folder_name

            return str(self.models_dir / folder_name(entry.id)), True
        return entry.hf_id or entry.id, False

    def catalog(self, entry: ModelEntry, via: str) -> ModelRef:
        self.check(entry)
        base, builtin = self.weights(entry)
        return ModelRef(entry.id, "builtin" if entry.builtin else "catalog", base, entry.id, via, entry=entry,
                        builtin=builtin)

    def folder(self, folder: Path, name: str, via: str) -> ModelRef:
        if self.use == "serve":  # the server checks the folder itself (config, safetensors, tokenizer, no adapter)
            return ModelRef(str(folder), "local", str(folder), name, via)
        if (folder / "adapter_config.json").is_file():
            return self.adapter(folder, name, via)
        if not (folder / "config.json").is_file():
            message, hint = _NEITHER[self.use]
            raise ValidationError(message.format(folder=folder), hint=hint, param="model")
        check_weights(folder)
        path = str(folder.resolve())
        base = _tuned_from(folder, ("manifest.json",)) if self.tune and self.technique in RL_TECHNIQUES else None
        if base is not None:  # a tuneloop full-rank output: RL continues from it with its base's defaults
            self.check(base)
            return ModelRef(path, "local", path, name, via, entry=base,
                            notes=(f"ℹ️  Continuing from {folder} (a {base.id} fine-tune)",))
        notes = (f"ℹ️  {folder} is a local model folder outside the catalog: tuneloop uses generic defaults for "
                 "it (override them with --learning-rate, --epochs, ...).",) if self.tune else ()
        return ModelRef(path, "local", path, name, via, notes=notes)

    def adapter(self, folder: Path, name: str, via: str) -> ModelRef:
        """A PEFT adapter on its base (tune: the start of an RL job, which keeps training it (LoRA)
        or merges it into its base first (full-rank))."""
        if self.tune and self.technique not in RL_TECHNIQUES:
            raise ValidationError(f"Continuing from an adapter folder is available for rlvr and rlaif; {folder} is "
                                  f"an adapter and this job is {self.technique}.",
                                  hint="Pass the base model as --model, or a full-rank output folder.", param="model")
        check_weights(folder, adapter=True)
        try:
            base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError):
            base_path = None
        if not base_path:
            raise ValidationError(f"{folder}/adapter_config.json does not name its base model "
                                  "(base_model_name_or_path).", param="model")
        base_dir = Path(str(base_path)).expanduser()
        if base_dir.is_dir():
            check_weights(base_dir)
        entry = _tuned_from(folder) or (_tuned_from(base_dir) if base_dir.is_dir() else None) \
            or load_catalog().get(str(base_path))
        if base_dir.is_dir():
            base, builtin = str(base_dir.resolve()), False
        elif entry is not None:   # the base's folder is not here (or never was): the entry's weights
            base, builtin = self.weights(entry)
        elif self.tune:
            raise ValidationError(f"The base model of adapter {folder} ({base_path}) is not on this machine.",
                                  param="model")
        else:                     # a Hub id from_pretrained may download
            base, builtin = str(base_path), False
        if entry is not None:
            self.check(entry)
        path = str(folder.resolve())
        notes = (f"ℹ️  Continuing from the adapter {folder} (base {entry.id if entry else base})",) \
            if self.tune else ()
        return ModelRef(path, "adapter", base, name, via, adapter=path, entry=entry, builtin=builtin, notes=notes)


def _tuned_from(folder: Path, files: tuple[str, ...] = ("manifest.json", "tuneloop_builtin.json")) -> ModelEntry | None:
    """The catalog entry a tuneloop output (manifest.json) or built-in folder was made from."""
    catalog = load_catalog()
    keys = {"manifest.json": "base_model", "tuneloop_builtin.json": "model_id"}
    for name in files:
        try:
            value = json.loads((folder / name).read_text()).get(keys[name])
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and catalog.get(value) is not None:
            return catalog.get(value)
    return None
