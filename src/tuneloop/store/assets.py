"""Versioned assets: a name with numbered versions, each keyed by the sha256 of its content, so
storing the same content again adds no version. Datasets and evaluators are two kinds of it
(one table of names, one of versions, each kind with its own payload columns); their services
(service/datasets.py, service/evaluators.py) decide what a version holds, this decides how
versions are numbered, found and removed.

    store.datasets.add("support-sft", {"sha256": ..., "rows": 12, ...}, head={"description": None})
    store.datasets.get("support-sft")          # the latest version, with ref "support-sft@v2"
    store.evaluators.get("colour-match@v1")    # one version; None when there is none
    store.datasets.latest()                    # the latest version of every name

A ref is `name` (the latest version) or `name@vN`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tuneloop.store.db import dataset_versions, datasets, evaluator_versions, evaluators, utcnow


@dataclass(frozen=True)
class AssetKind:
    name: str              # dataset | evaluator
    names: Table           # one row per name: name, created_at, the kind's own (description, type)
    versions: Table        # one row per version: name, version, sha256, created_at, the kind's payload


DATASETS = AssetKind("dataset", datasets, dataset_versions)
EVALUATORS = AssetKind("evaluator", evaluators, evaluator_versions)


def split_ref(ref: str) -> tuple[str, int | None] | None:
    """`name` -> (name, None); `name@vN` -> (name, N); None when the version is not a number."""
    name, _, version = (ref or "").partition("@v")
    if version and not version.isdigit():
        return None
    return name, int(version) if version else None


class VersionedAssets:
    def __init__(self, engine: Engine, kind: AssetKind):
        self.engine, self.kind = engine, kind
        self.names, self.versions = kind.names, kind.versions

    def add(self, name: str, row: dict[str, Any], *, head: dict[str, Any] | None = None
            ) -> tuple[dict[str, Any], bool]:
        """Add `row` (its payload and sha256) as the next version of `name` (the name is created
        with `head` when missing) unless a version with the same sha256 exists; return (the
        version row, whether it was added)."""
        for _ in range(5):  # two processes adding a version at once: the unique (name, version) decides
            existing = self.by_sha(name, row["sha256"])
            if existing is not None:
                return existing, False
            try:
                with self.engine.begin() as conn:
                    if conn.execute(select(self.names.c.name).where(self.names.c.name == name)).first() is None:
                        conn.execute(insert(self.names).values(name=name, created_at=utcnow(), **(head or {})))
                    version = (conn.execute(select(func.max(self.versions.c.version))
                                            .where(self.versions.c.name == name)).scalar() or 0) + 1
                    conn.execute(insert(self.versions).values(name=name, version=version, created_at=utcnow(), **row))
                return self.version(name, version), True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not add a version of {self.kind.name} {name}")

    def by_sha(self, name: str, sha256: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.versions).where(and_(self.versions.c.name == name,
                                                                self.versions.c.sha256 == sha256))).mappings().first()
        return _with_ref(row)

    def version(self, name: str, version: int | None) -> dict[str, Any] | None:
        """Version `version` of `name`, or its latest when None."""
        q = select(self.versions).where(self.versions.c.name == name)
        q = q.where(self.versions.c.version == version) if version else \
            q.order_by(self.versions.c.version.desc()).limit(1)
        with self.engine.connect() as conn:
            return _with_ref(conn.execute(q).mappings().first())

    def get(self, ref: str) -> dict[str, Any] | None:
        """`name` (its latest version) or `name@vN`; None when there is no such version."""
        parts = split_ref(ref)
        return None if parts is None else self.version(*parts)

    def head(self, name: str) -> dict[str, Any] | None:
        """The name's own row (created_at, description, type)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(self.names).where(self.names.c.name == name)).mappings().first()
        return dict(row) if row else None

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of `name`), by name and version."""
        q = select(self.versions).order_by(self.versions.c.name, self.versions.c.version)
        if name:
            q = q.where(self.versions.c.name == name)
        with self.engine.connect() as conn:
            return [_with_ref(r) for r in conn.execute(q).mappings()]

    def latest(self) -> list[dict[str, Any]]:
        """The latest version of every name, by name, each with its number of versions."""
        latest: dict[str, dict[str, Any]] = {}
        counts: dict[str, int] = {}
        for row in self.list():
            latest[row["name"]] = row
            counts[row["name"]] = counts.get(row["name"], 0) + 1
        return [row | {"versions": counts[name]} for name, row in sorted(latest.items())]

    def update(self, version_id: int, **values: Any) -> None:
        """Change payload columns of one version (where its frozen files ended up)."""
        with self.engine.begin() as conn:
            conn.execute(update(self.versions).where(self.versions.c.id == version_id).values(**values))

    def delete(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        """Delete one version, or the name with all its versions; return the deleted version rows."""
        gone = [r for r in self.list(name) if version is None or r["version"] == version]
        with self.engine.begin() as conn:
            q = delete(self.versions).where(self.versions.c.name == name)
            if version is not None:
                q = q.where(self.versions.c.version == version)
            conn.execute(q)
            left = conn.execute(select(func.count()).select_from(self.versions)
                                .where(self.versions.c.name == name)).scalar()
            if not left:
                conn.execute(delete(self.names).where(self.names.c.name == name))
        return gone


def _with_ref(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    out["ref"] = f"{out['name']}@v{out['version']}"
    return out
