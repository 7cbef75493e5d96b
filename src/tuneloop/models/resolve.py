"""Which model a reference names: the one answer training, evaluation, judging and serving use.

    ref = resolve("tuneloop/tiny-qwen3", technique="sft", training_type="lora")   # tune: checked
    ref = resolve("out/adapter", use="eval")             # ref.base (its base model), ref.adapter
    ref = resolve("sft", use="eval", lookups=lookups)    # the project's latest sft job's output
    ref = resolve("model.Q4_K_M.gguf")                   # kind "gguf": converted once, on first load
    ref.load_path()      # what from_pretrained takes (a built-in is built, a GGUF converted the first time)
    ref.local_folder()   # the base's folder on this machine, or None (a Hub model not in the cache)

A reference is, in this order:
  nothing                the catalog's default model
  a catalog id           a catalog model (its Hub id: the local Hugging Face cache's snapshot when it is
                         there, else a download, else with the Hub off the error naming `hf download`)
                         or a built-in (built offline in models_dir)
  a folder               a model folder (config.json) or a PEFT adapter folder (adapter_config.json);
                         its weights must be safetensors (weights.check_weights) and its code
                         transformers' own (weights.check_code: trust_remote_code stays off)
  a GGUF file            (*.gguf or the GGUF magic) checked from its header, converted on first load
                         into <models_dir>/gguf/<sha256>/ (models.gguf); its id is the file's path
  GROUP@vN               a registered version's output folder
  a deployed name        the folder `tuneloop serve` serves under that name
  a technique or a job   the technique's latest job, or the job of that name: its output folder
  a Hub id (ORG/NAME)    outside the catalog: its snapshot in the local Hugging Face cache, like a
                         folder outside the catalog (generic defaults); not cached: `hf download` it
The lookups need `lookups` (`ModelLookups`), which the service layer builds from the store:
nothing here opens it. Without lookups they are not references.

`use` names who asks; their checks and error messages differ, the order above does not:
  tune   a technique and training type are checked against the catalog entry; adapter folders
         continue RL jobs only; an RL job continues a tuneloop full-rank output with its base's
         defaults; an unknown name gets the catalog's "not yet supported" error
  eval   any model or adapter folder; an adapter's base may be a Hub id
  judge  like eval (rewards.judge turns the errors into ValueError, a reward's config error)
  serve  folders are taken as they are: the server checks them itself (serving.adapters);
         `served_folder` turns a GGUF file an inference component or a request names into its folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneloop.catalog import RL_TECHNIQUES, TECHNIQUES, ModelEntry, load_catalog
from tuneloop.errors import CatalogError, ValidationError
from tuneloop.models import hub
from tuneloop.models.weights import PICKLE_SUFFIXES, check_code, check_weights

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
    kind: str                        # catalog | builtin | local | adapter | gguf | hub: what the weights are
    base: str                        # the base weights: a folder (a built-in's or a GGUF's, made by load_path) or a Hub id
    name: str                        # what users see: the catalog id, the job's id, or the reference as given
    via: str                         # how it was found: default | catalog | folder | file | package | deployed | job | hub
    adapter: str | None = None       # a PEFT adapter folder on top of `base`
    entry: ModelEntry | None = None  # the catalog entry (of the base, for tuneloop outputs and adapters)
    builtin: bool = False            # `base` is a built-in's folder: load_path builds it first
    notes: tuple[str, ...] = field(default=())
    gguf: str | None = None          # the GGUF file `base` is converted from (load_path converts it first)

    @property
    def lora_targets(self) -> list[str] | None:
        return list(self.entry.lora_target_modules) if self.entry and self.entry.lora_target_modules else None

    def load_path(self) -> str:
        """The base as from_pretrained takes it: a folder (a built-in is built first, a GGUF converted
        first) or a Hub id: its cached snapshot, else the id with the Hub on, else hub's ValidationError."""
        if self.builtin:
            from tuneloop.models.builtin import ensure_builtin

            return str(ensure_builtin(self.entry.id, Path(self.base).parent))  # base is models_dir/<name>
        if self.gguf is not None:
            from tuneloop.models.gguf import ensure_converted

            return str(ensure_converted(Path(self.gguf), Path(self.base), Path(self.base).name))
        if Path(self.base).is_dir() or not hub.looks_like_repo_id(self.base):
            return self.base     # a folder, or something only from_pretrained can say more about
        return hub.hub_path(self.base)

    def local_folder(self, convert: bool = True) -> Path | None:
        """The base's folder on this machine (config, tokenizer), or None: a Hub model not in the
        cache, or with convert=False a GGUF not converted yet (a dry run reads its header instead)."""
        if self.builtin or (self.gguf is not None and convert):
            return Path(self.load_path())
        if Path(self.base).is_dir():
            return Path(self.base)
        return None if self.gguf is not None else hub.cached_folder(self.base)


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
    if folder.is_file():
        return ctx.file(folder)
    if ref.lower().endswith(".gguf"):
        raise ValidationError(f"GGUF file {ref} does not exist.", hint="Check the path (relative paths start at "
                              f"the current folder, {Path.cwd()}).", param="model")
    found = _lookup(ref, project, lookups, use) if lookups is not None else None
    if found is not None:
        return ctx.folder(*found)
    if hub.looks_like_repo_id(ref):  # a Hub id outside the catalog: its snapshot in the local cache
        snapshot = hub.cached_folder(ref)
        if snapshot is not None:
            return ctx.folder(snapshot, ref, "hub", ref_id=ref)
    if use == "tune":
        try:
            catalog.require(ref)  # raises the catalog's "not yet supported" error, with the families
        except CatalogError as e:
            if hub.looks_like_repo_id(ref):  # or a Hub model tuneloop would take from the local cache
                e.hint = f"{e.hint}\nIf it is a Hugging Face model, {hub.download_hint(ref, 'download')}"
            raise
    message, hint = _UNKNOWN[use]
    if hub.looks_like_repo_id(ref):
        hint = f"If it is a Hugging Face model, {hub.download_hint(ref, 'download')}" + (f"\n{hint}" if hint else "")
    raise ValidationError(message.format(ref=ref), hint=hint, param="model")


def served_folder(path: str | Path, models_dir: Path | None = None, param: str = "model_path") -> Path:
    """The folder to serve a full model from, for a path the caller has already allowed (the server's
    weight policy, the operator's CLI): a folder as it is; a GGUF file converted once into the
    resolver's cached folder (<models_dir>/gguf/<sha256>/, the one `tuneloop serve --model X.gguf`
    and training use), so an inference component or a swapped base can be a GGUF file too. Any
    other file is the resolver's refusal, under `param`."""
    path = Path(path)
    if not path.is_file():
        return path
    try:
        return Path(resolve(str(path), use="serve", models_dir=models_dir).load_path())
    except ValidationError as e:
        e.param = param
        raise


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

    def file(self, path: Path) -> ModelRef:
        """A file: a GGUF, checked from its header unless it was converted before; anything else is refused."""
        from tuneloop.models import gguf

        if not gguf.looks_like_gguf(path):
            pickled = path.suffix in PICKLE_SUFFIXES
            raise ValidationError(f"{path} is a file; a model is a folder (config.json, *.safetensors, tokenizer) or "
                                  "a .gguf file." + (" tuneloop never loads pickled weights (unpickling a file can "
                                                     "run code)." if pickled else ""),
                                  hint="Pass the folder that save_pretrained wrote, or a GGUF file.", param="model")
        source = path.resolve()
        sha = gguf.file_sha256(source, self.models_dir)
        folder = gguf.cache_folder(self.models_dir, sha)
        if not gguf.converted(folder):
            gguf.read_header(source)  # a damaged file or an unknown architecture stops here, before any job
        notes = (f"ℹ️  {path} is a GGUF file outside the catalog: tuneloop converts it once into {folder} and uses "
                 "generic defaults for it (override them with --learning-rate, --epochs, ...).",) if self.tune else ()
        return ModelRef(str(source), "gguf", str(folder), str(source), "file", notes=notes, gguf=str(source))

    def folder(self, folder: Path, name: str, via: str, ref_id: str | None = None) -> ModelRef:
        """A folder (or, with ref_id, a Hub snapshot known by that id)."""
        kind = "hub" if ref_id else "local"
        if self.use == "serve":  # the server checks the folder itself (config, safetensors, tokenizer, no adapter)
            return ModelRef(ref_id or str(folder), kind, str(folder), name, via)
        if (folder / "adapter_config.json").is_file():
            return self.adapter(folder, name, via)
        if not (folder / "config.json").is_file():
            message, hint = _NEITHER[self.use]
            ggufs = sorted(p.name for p in folder.glob("*.gguf"))
            if ggufs:
                hint = f"It holds {', '.join(ggufs[:3])}: pass the file itself, e.g. --model {folder / ggufs[0]}"
            raise ValidationError(message.format(folder=folder), hint=hint, param="model")
        check_weights(folder)
        code_notes = check_code(folder)
        path = ref_id or str(folder.resolve())
        base = _tuned_from(folder, ("manifest.json",)) if self.tune and self.technique in RL_TECHNIQUES else None
        weights = str(folder.resolve())
        if base is not None:  # a tuneloop full-rank output: RL continues from it with its base's defaults
            self.check(base)
            return ModelRef(path, kind, weights, name, via, entry=base,
                            notes=(f"ℹ️  Continuing from {folder} (a {base.id} fine-tune)",) + code_notes)
        what = f"{ref_id} (in the local Hugging Face cache) is a model" if ref_id else f"{folder} is a local model folder"
        notes = (f"ℹ️  {what} outside the catalog: tuneloop uses generic defaults for "
                 "it (override them with --learning-rate, --epochs, ...).",) if self.tune else ()
        return ModelRef(path, kind, weights, name, via, notes=notes + code_notes)

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
        source = _gguf_source(folder) if not base_dir.is_dir() else None
        gguf_file = None
        if base_dir.is_dir():
            base, builtin = str(base_dir.resolve()), False
        elif entry is not None:   # the base's folder is not here (or never was): the entry's weights
            base, builtin = self.weights(entry)
        elif source is not None:  # trained on a GGUF whose converted folder is gone: convert it again on load
            gguf_ref = self.file(source)
            base, builtin, gguf_file = gguf_ref.base, False, gguf_ref.gguf
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
        return ModelRef(path, "adapter", base, name, via, adapter=path, entry=entry, builtin=builtin, notes=notes,
                        gguf=gguf_file)


def _gguf_source(folder: Path) -> Path | None:
    """The GGUF file a tuneloop output was trained on (its manifest's base_model), when it is still here."""
    try:
        value = json.loads((folder / "manifest.json").read_text()).get("base_model")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(value, str) or not Path(value).is_file():
        return None
    from tuneloop.models.gguf import looks_like_gguf

    return Path(value) if looks_like_gguf(Path(value)) else None


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
