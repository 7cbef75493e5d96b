"""The service layer's side of model resolution (tuneloop.models.resolve decides what a name
means): the store's answers as `ModelLookups`, and the generic hyperparameter defaults of models
outside the catalog.

    ref = resolve("sft", use="eval", lookups=store_lookups(store))
    defaults = model_defaults(ref, "sft", "lora")
"""

from __future__ import annotations

from tuneloop.catalog import TECHNIQUES
from tuneloop.errors import ValidationError
from tuneloop.models.resolve import JobOutput, ModelLookups, ModelRef
from tuneloop.settings import resolve_project
from tuneloop.store import Store

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


def check_generic(model: ModelRef, technique: str) -> None:
    """A model outside the catalog can be tuned with the techniques that have generic defaults."""
    if model.entry is None and technique not in GENERIC_DEFAULTS:
        raise ValidationError(f"Technique {technique} is not available yet for models outside the catalog.",
                              param="technique")


def model_defaults(model: ModelRef, technique: str, training_type: str) -> dict:
    """The catalog entry's defaults, else the generic ones (full-rank: its learning rate, no lora_*)."""
    if model.entry is not None:
        return model.entry.default_hyperparameters(technique, training_type)
    hp = dict(GENERIC_DEFAULTS.get(technique, GENERIC_DEFAULTS["sft"]))
    full_lr = hp.pop("learning_rate_full")
    if training_type == "full-rank":
        hp["learning_rate"] = full_lr
        hp = {k: v for k, v in hp.items() if not k.startswith("lora_")}
    return hp


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
