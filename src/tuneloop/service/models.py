"""The service layer's side of model resolution (tuneloop.models.resolve decides what a name
means): the store's answers as `ModelLookups`, and a model's own hyperparameter defaults (its
catalog entry's; the generic ones live in tuneloop.spec's registry, under them).

    ref = resolve("sft", use="eval", lookups=store_lookups(store))
    defaults = model_defaults(ref, "sft", "lora")
"""

from __future__ import annotations

from tuneloop.catalog import TECHNIQUES
from tuneloop.errors import ValidationError
from tuneloop.models.resolve import JobOutput, ModelLookups, ModelRef
from tuneloop.settings import resolve_project
from tuneloop.spec import DEFAULTS
from tuneloop.store import Store


def check_generic(model: ModelRef, technique: str) -> None:
    """A model outside the catalog can be tuned with the techniques that have generic defaults."""
    if model.entry is None and technique not in DEFAULTS:
        raise ValidationError(f"Technique {technique} is not available yet for models outside the catalog.",
                              param="technique")


def model_defaults(model: ModelRef, technique: str, training_type: str) -> dict:
    """The model's own defaults: its catalog entry's (full-rank: its learning rate, no lora_*), none
    for a model outside the catalog. `tuneloop.spec.resolve_hyperparameters` layers them over the
    generic table."""
    if model.entry is not None:
        return model.entry.default_hyperparameters(technique, training_type)
    return {}


def store_lookups(store: Store) -> ModelLookups:
    """Jobs, registered versions and deployed names, as the resolver asks for them."""

    def job_output(ref: str, project: str | None) -> JobOutput | None:
        job = store.latest_job(resolve_project(project), ref) if ref in TECHNIQUES else store.get_job(ref)
        return None if job is None else JobOutput(job["id"], job["state"], job["output_path"])

    def package_version(group: str, version: str) -> str | None:
        rows = [p for p in store.list_packages(group=group) if str(p["version"]) == version]
        return rows[0]["output_path"] if rows else None

    def deployed(project: str | None, name: str) -> str | None:
        row = next((d for d in store.list_deployed(resolve_project(project)) if d["name"] == name), None)
        return row["path"] if row else None

    return ModelLookups(job_output, package_version, deployed)
