"""Model package groups and versions with lineage (base model, dataset hash, job), and
`--from-tune` resolution of a project's outputs."""

from __future__ import annotations

from typing import Any

from tuneloop.errors import NotFoundError
from tuneloop.spec import JobSpec
from tuneloop.store import Store


def register_output(store: Store, spec: JobSpec, *, job_id: str, output_path: str, output_type: str,
                    dataset_sha256: str, metrics: dict[str, Any]) -> int:
    """Add the job's output as the next version of its group; returns the version number."""
    return store.register_package(spec.group, spec.project, dict(
        job_id=job_id, technique=spec.technique, training_type=spec.training_type, base_model=spec.model,
        dataset=spec.dataset, dataset_sha256=dataset_sha256, output_path=output_path, output_type=output_type,
        metrics=metrics))


def resolve_from_tune(store: Store, project: str, ref: str | None) -> tuple[str, str]:
    """`--from-tune [T|T-SLUG]` -> (output path, output type): technique+slug key, then the
    technique, then the latest output (the seed's order)."""
    config = store.get_config(project)
    keys: list[str] = []
    if ref:
        technique, _, slug = ref.partition("-")
        t = technique.upper()
        if slug:
            s = slug.upper().replace("-", "_")
            keys += [f"TUNE_ADAPTER_PATH_{t}_{s}", f"TUNE_MODEL_PATH_{t}_{s}"]
        keys += [f"TUNE_ADAPTER_PATH_{t}", f"TUNE_MODEL_PATH_{t}"]
    else:
        keys.append("TUNE_OUTPUT_PATH_LATEST")
    for key in keys:
        if key in config:
            if key == "TUNE_OUTPUT_PATH_LATEST":
                return config[key], config.get("TUNE_OUTPUT_TYPE_LATEST", "adapter")
            return config[key], "adapter" if "_ADAPTER_" in key else "full-model"
    raise NotFoundError(f"No completed tune output found for {ref or 'this project'}.",
                        hint="Run a tune job first: tuneloop tune --technique sft --dataset FILE")
