"""The Store: every read and write of jobs, events, per-project config state, the registry and
deployments; datasets and evaluators are versioned assets (store/assets.py) on it.

Passed into the service (I/O is an argument), so tests can hand it a temporary SQLite file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tuneloop.store import db
from tuneloop.store.assets import DATASETS, EVALUATORS, VersionedAssets
from tuneloop.store.db import config_state, events, jobs, model_package_groups, model_packages, utcnow
from tuneloop.store.db import deployed_models, deployments
from tuneloop.store.db import model_artifacts
from tuneloop.store.finetuning import FineTuningStore
from tuneloop.store.keys import KeyStore
from tuneloop.store.webhooks import WebhookStore

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "cancelled")
API_JOB_PREFIX = "ftjob-"     # the fine-tuning API's jobs (service/finetuning.py)


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.datasets = VersionedAssets(engine, DATASETS)        # name@vN, keyed by content sha256
        self.evaluators = VersionedAssets(engine, EVALUATORS)
        self.keys = KeyStore(engine)                              # API keys (store/keys.py)
        self.finetuning = FineTuningStore(engine)                 # the fine-tuning API's files and jobs
        self.webhooks = WebhookStore(engine)                      # webhooks per project, their deliveries

    # ---- jobs -------------------------------------------------------------------------------
    def insert_job(self, row: dict[str, Any]) -> bool:
        """Insert a queued job; False when another active job of that project+technique exists."""
        key = row.pop("active_key", f"{row['project']}:{row['technique']}")   # None: any number may run (evals)
        row = {**row, "state": "queued", "active_key": key,
               "created_at": utcnow(), "attempts": 0, "step": 0, "cancel_requested": False}
        row.setdefault("total_steps", 0)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(jobs).values(**row))
            return True
        except IntegrityError:
            return False

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def find_jobs(self, project: str | None = None, technique: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
        q = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        if project:
            q = q.where(jobs.c.project == project)
        if technique:
            q = q.where(jobs.c.technique == technique)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def latest_job(self, project: str, technique: str) -> dict[str, Any] | None:
        """The project's tracked job of a technique (what `tune` is idempotent on): the fine-tuning
        API's jobs (ftjob-...) are the API's own, never the one `tune` follows."""
        q = (select(jobs).where(and_(jobs.c.project == project, jobs.c.technique == technique,
                                     ~jobs.c.id.startswith(API_JOB_PREFIX)))
             .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def update_job(self, job_id: str, **values: Any) -> None:
        if "state" in values and values["state"] in FINAL_STATES:
            values.setdefault("active_key", None)
            values.setdefault("finished_at", utcnow())
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def claim_job(self, job_id: str, pid: int, host: str, expect_pid: int | None = None) -> bool:
        """Move a job to running under this process; one winner among racing runners.

        A queued job is claimed when no runner holds it; a running job only by naming the dead
        runner's pid (`expect_pid`), so two restarts of one dead job cannot both win."""
        now = utcnow()
        if expect_pid is None:
            cond = and_(jobs.c.state == "queued", jobs.c.pid.is_(None))
        else:
            cond = and_(jobs.c.state.in_(ACTIVE_STATES), jobs.c.pid == expect_pid)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(jobs).where(and_(jobs.c.id == job_id, jobs.c.cancel_requested.is_(False), cond))
                .values(state="running", pid=pid, host=host, heartbeat_at=now, attempts=jobs.c.attempts + 1,
                        started_at=func.coalesce(jobs.c.started_at, now)))
            return res.rowcount == 1

    # ---- events -----------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(job_id=job_id, created_at=utcnow(), level=level, type=type,
                                               message=message, data=data))

    def list_events(self, job_id: str, after_id: int = 0, type: str | None = None) -> list[dict[str, Any]]:
        q = select(events).where(and_(events.c.job_id == job_id, events.c.id > after_id)).order_by(events.c.id)
        if type:
            q = q.where(events.c.type == type)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # ---- per-project config state (the seed's do/config) -----------------------------------
    def set_config(self, project: str, values: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            for key, value in values.items():
                conn.execute(delete(config_state).where(and_(config_state.c.project == project,
                                                             config_state.c.key == key)))
                conn.execute(insert(config_state).values(project=project, key=key, value=str(value)))

    def get_config(self, project: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(config_state.c.key, config_state.c.value)
                                .where(config_state.c.project == project).order_by(config_state.c.key))
            return {k: v for k, v in rows}

    # ---- registry ---------------------------------------------------------------------------
    def register_package(self, group: str, project: str, row: dict[str, Any]) -> int:
        """Add a version to a model package group (created when missing); return the version."""
        with self.engine.begin() as conn:
            if conn.execute(select(model_package_groups.c.name).where(model_package_groups.c.name == group)).first() is None:
                conn.execute(insert(model_package_groups).values(name=group, project=project, created_at=utcnow()))
            existing = conn.execute(select(model_packages.c.version).where(model_packages.c.job_id == row["job_id"])
                                    .where(model_packages.c.group_name == group)).scalar()
            if existing is not None:  # a job registers once, also when its completion is retried
                return existing
            version = (conn.execute(select(func.max(model_packages.c.version))
                                    .where(model_packages.c.group_name == group)).scalar() or 0) + 1
            conn.execute(insert(model_packages).values(group_name=group, version=version, created_at=utcnow(), **row))
            return version

    def list_packages(self, group: str | None = None, project: str | None = None) -> list[dict[str, Any]]:
        q = select(model_packages).order_by(model_packages.c.group_name, model_packages.c.version)
        if group:
            q = q.where(model_packages.c.group_name == group)
        if project:
            q = q.join(model_package_groups, model_package_groups.c.name == model_packages.c.group_name) \
                 .where(model_package_groups.c.project == project)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def package_for_job(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(model_packages).where(model_packages.c.job_id == job_id)).mappings().first()
        return dict(row) if row else None

    # ---- versioned assets (store/assets.py: store.datasets, store.evaluators) ------------------
    def get_dataset_version(self, ref: str) -> dict[str, Any] | None:
        """The dataset lookup passed down (`stage_dataset(lookup=...)`): `name` or `name@vN`."""
        return self.datasets.get(ref)

    def get_evaluator_version(self, ref: str) -> dict[str, Any] | None:
        """The evaluator lookup passed down (`RewardContext(evaluator_lookup=...)`)."""
        return self.evaluators.get(ref)

    # ---- deployments (tuneloop serve, adapter, add-ic, deploy) ----------------------------------
    def get_deployment(self, project: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deployments).where(deployments.c.project == project)).mappings().first()
        return dict(row) if row else None

    def upsert_deployment(self, project: str, **values: Any) -> None:
        """Create the project's deployment row (base_model required then) or update fields of it."""
        values["updated_at"] = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(update(deployments).where(deployments.c.project == project).values(**values))
            if res.rowcount == 0:
                conn.execute(insert(deployments).values(project=project, **values))

    def clear_server(self, project: str, pid: int) -> None:
        """Forget the running server, unless another one has replaced it since."""
        with self.engine.begin() as conn:
            conn.execute(update(deployments).where(and_(deployments.c.project == project, deployments.c.pid == pid))
                         .values(host=None, port=None, pid=None, server_host=None, started_at=None,
                                 updated_at=utcnow()))

    def list_deployed(self, project: str, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(deployed_models).where(deployed_models.c.project == project).order_by(deployed_models.c.created_at,
                                                                                           deployed_models.c.name)
        if kind:
            q = q.where(deployed_models.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def upsert_deployed(self, project: str, name: str, row: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(deployed_models).where(and_(deployed_models.c.project == project,
                                                            deployed_models.c.name == name)))
            conn.execute(insert(deployed_models).values(project=project, name=name, created_at=utcnow(), **row))

    def delete_deployed(self, project: str, name: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(delete(deployed_models).where(and_(deployed_models.c.project == project,
                                                                  deployed_models.c.name == name)))
            return res.rowcount > 0

    def package_by_output_path(self, path: str) -> dict[str, Any] | None:
        """The registered version whose output is `path` (lineage of a deployed folder)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(model_packages).where(model_packages.c.output_path == path)
                               .order_by(model_packages.c.id.desc())).mappings().first()
        return dict(row) if row else None

    # ---- model artifacts (tuneloop export) ---------------------------------------------------------
    def add_artifact(self, group: str, version: int, row: dict[str, Any]) -> dict[str, Any]:
        """Record an export (format, quant, path, files, verify) of registered version group@vN."""
        with self.engine.begin() as conn:
            res = conn.execute(insert(model_artifacts).values(group_name=group, version=version, created_at=utcnow(),
                                                              **row))
            artifact_id = res.inserted_primary_key[0]
        return next(a for a in self.list_artifacts(group, version) if a["id"] == artifact_id)

    def list_artifacts(self, group: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
        q = select(model_artifacts).order_by(model_artifacts.c.group_name, model_artifacts.c.version,
                                             model_artifacts.c.id)
        if group is not None:
            q = q.where(model_artifacts.c.group_name == group)
        if version is not None:
            q = q.where(model_artifacts.c.version == version)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


_STORES: dict[str, Store] = {}


def open_store(url: str) -> Store:
    """One Store (engine + migrated schema) per URL per process."""
    if url not in _STORES:
        engine = db.make_engine(url)
        db.migrate(engine)
        _STORES[url] = Store(engine)
    return _STORES[url]


def age_seconds(ts: datetime | None) -> float | None:
    return None if ts is None else (utcnow() - ts).total_seconds()
