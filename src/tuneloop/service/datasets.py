"""The dataset service: named, versioned, staged datasets (SageMaker V3's DataSet, self-hosted).

A version is the canonical JSONL that `stage_dataset` writes, stored under
`$TUNELOOP_HOME/datasets/<name>/v<N>/data.jsonl` and keyed by its sha256: staging identical
content again adds no version. `name` means the latest version, `name@vN` one version; both work
wherever a dataset source is accepted (`tuneloop tune --dataset name@v2`), and a job records the
exact `name@vN` and sha256 it trained on.

    datasets = open_services().datasets         # DatasetService(store, settings)
    row, created = datasets.create("support-sft", "data/train.jsonl", "sft")
    train, validation = datasets.split("support-sft", ratio=0.9, seed=0)
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from tuneloop.data.lengths import column_lengths
from tuneloop.data.sources import NAME_RE, REF_RE
from tuneloop.data.stage import StageResult, split_staged, stage_dataset
from tuneloop.data.staged import read_rows
from tuneloop.errors import DatasetError, NotFoundError, ValidationError
from tuneloop.store.assets import split_ref

SAMPLE_ROWS = 3


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or "@" in name:
        raise ValidationError(f"Dataset name {name!r} is not valid.",
                              hint="Use 1-100 characters: lower-case letters, digits, '.', '_' and '-', starting "
                                   "with a letter or digit.", param="name")
    return name


class DatasetService:
    def __init__(self, store: Any, settings: Any):
        self.store = store
        self.root = Path(settings.home) / "datasets"

    # ---- create ---------------------------------------------------------------------------------
    def create(self, name: str, source: str, technique: str, *, column_map: str | None = None,
               no_transform: bool = False, take: int | None = None, reward_model: str | None = None,
               description: str | None = None, command: str | None = None) -> tuple[dict[str, Any], StageResult]:
        """Stage `source` and store it as the next version of `name` (unless that content exists)."""
        check_name(name)
        work = self.root / ".staging" / uuid.uuid4().hex
        try:
            staged = stage_dataset(source, technique, work / "data.jsonl", column_map=column_map,
                                   no_transform=no_transform, take=take, reward_model=reward_model,
                                   lookup=self.store.datasets.get, command=command)
            row = self._store(name, staged, technique, source, column_map, description)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return row, staged

    def _store(self, name: str, staged: StageResult, technique: str, source: str, column_map: str | None,
               description: str | None, parent: str | None = None, extra: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        existing = self.store.datasets.by_sha(name, staged.sha256)
        if existing is not None:
            return existing | {"created": False}
        folder = self.root / name / f"tmp-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "data.jsonl"
        try:  # until the database has the version, a failure (Ctrl-C included) leaves no folder behind
            shutil.move(str(staged.path), path)
            stats = {k: v for k, v in staged.to_dict().items()
                     if k in ("rows_read", "rows_written", "empty_fields", "empty_rows", "duplicates", "files",
                              "notes", "warnings", "dataset_version")}
            stats["lengths"] = column_lengths(path, staged.columns)
            stats.update(extra or {})
            row, created = self.store.datasets.add(name, dict(
                technique=technique, format=staged.format, sha256=staged.sha256, rows=staged.rows,
                columns=staged.columns, source=source, column_map=column_map, path=str(path), parent=parent,
                stats=stats), head={"description": description})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if not created:  # another process stored the same content first
            shutil.rmtree(folder, ignore_errors=True)
            return row | {"created": False}
        final = self.root / name / f"v{row['version']}"
        shutil.rmtree(final, ignore_errors=True)
        folder.rename(final)
        self.store.datasets.update(row["id"], path=str(final / "data.jsonl"))
        meta = final / "meta.json.partial"
        meta.write_text(json.dumps(
            {k: v for k, v in row.items() if k not in ("id", "path")} | {"path": str(final / "data.jsonl")},
            indent=2, default=str) + "\n")
        meta.replace(final / "meta.json")
        return self.get(row["ref"]) | {"created": True}

    # ---- read -----------------------------------------------------------------------------------
    def get(self, ref: str) -> dict[str, Any]:
        m = REF_RE.match(ref or "")
        row = self.store.datasets.get(ref) if m else None
        if row is None:
            raise NotFoundError(f"No registered dataset {ref!r}.",
                                hint="List them with: tuneloop datasets list", param="name")
        return row

    def list(self) -> list[dict[str, Any]]:
        """The latest version of every dataset, with its number of versions."""
        return self.store.datasets.latest()

    def versions(self, name: str) -> list[dict[str, Any]]:
        rows = self.store.datasets.list(name)
        if not rows:
            raise NotFoundError(f"No registered dataset {name!r}.", hint="List them with: tuneloop datasets list",
                                param="name")
        return rows

    def sample(self, row: dict[str, Any], n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
        return read_rows(row["path"], n)

    # ---- split and delete -------------------------------------------------------------------------
    def split(self, ref: str, ratio: float = 0.9, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Deterministic train/validation split of a version into `<name>-train` and `<name>-validation`."""
        row = self.get(ref)
        work = self.root / ".staging" / uuid.uuid4().hex
        try:
            train, val = split_staged(Path(row["path"]), ratio, seed, work / "train.jsonl", work / "validation.jsonl",
                                      row["columns"], row["format"])
            out = []
            for suffix, part in (("train", train), ("validation", val)):
                name = f"{row['name']}-{suffix}"
                check_name(name)
                out.append(self._store(name, part, row["technique"], row["ref"], None, None, parent=row["ref"],
                                       extra={"split": {"ratio": ratio, "seed": seed, "part": suffix}}))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out[0], out[1]

    def delete(self, ref: str) -> list[dict[str, Any]]:
        parts = split_ref(ref)
        if parts is None:
            raise DatasetError(f"Bad dataset version in {ref!r}.", hint="Write NAME or NAME@vN.", param="name")
        name, version = parts
        gone = self.store.datasets.delete(name, version)
        if not gone:
            raise NotFoundError(f"No registered dataset {ref!r}.", hint="List them with: tuneloop datasets list",
                                param="name")
        for row in gone:
            shutil.rmtree(Path(row["path"]).parent, ignore_errors=True)
        if not self.store.datasets.list(name):
            shutil.rmtree(self.root / name, ignore_errors=True)
        return gone
