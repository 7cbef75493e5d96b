"""`tuneloop export REF`: resolve the reference with the store's lookups, export it
(tuneloop.export), and record the export as an artifact of its registered version.

    result, artifact = export(store, "sft", "gguf", Path("out"), quant="q8_0")
    store.list_artifacts("default-tune-models", 3)

REF is anything `tuneloop eval` takes (tuneloop.models.resolve with use="eval"): a job id, a
technique (its latest completed output), GROUP@vN, a deployed name, an adapter or model folder, a
catalog or built-in model. When it is a registered output (GROUP@vN, a job, or a folder that is
some version's output) the export is added to that version's artifacts (store table
model_artifacts, schema version 5); otherwise `artifact` is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.models.resolve import ModelRef, resolve
from tuneloop.service.models import store_lookups
from tuneloop.store import Store


def registered_version(store: Store, ref: ModelRef) -> tuple[str, int] | None:
    """(group, version) of the registered version `ref` is the output of, if any."""
    if ref.via == "package":
        group, _, version = ref.name.rpartition("@v")
        return group, int(version)
    package = store.package_for_job(ref.name) if ref.via == "job" else None
    if package is None:
        package = store.package_by_output_path(ref.adapter or ref.id)
    return (package["group_name"], int(package["version"])) if package else None


def export(store: Store, reference: str, fmt: str, output: Path, *, quant: str | None = None, verify: bool = True,
           project: str | None = None, name: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(tuneloop.export.ExportResult, the artifact row or None)."""
    from tuneloop.export import check_format, export_model

    check_format(fmt)
    ref = resolve(reference, use="eval", project=project, lookups=store_lookups(store))
    result = export_model(ref, fmt, Path(output), quant=quant, verify=verify, name=name)
    found = registered_version(store, ref)
    artifact = None
    if found is not None:
        artifact = store.add_artifact(found[0], found[1], dict(
            format=fmt, quant=result.quant, path=str(Path(result.output).resolve()), files=result.files,
            verify=result.verify.to_dict() if result.verify is not None else None))
    return result, artifact
