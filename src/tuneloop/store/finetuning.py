"""The OpenAI fine-tuning API's records in the store (`store.finetuning`): uploaded files and
`fine_tuning.job` rows (db.files, db.fine_tuning_jobs); service/finetuning.py reads and writes them.
Every read is by project, so one project never sees another's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tuneloop.store.db import files, fine_tuning_jobs, jobs, utcnow


class FineTuningStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    # ---- files ------------------------------------------------------------------------------
    def add_file(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "created_at": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(insert(files).values(**row))
        return row

    def get_file(self, project: str, file_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(files).where(and_(files.c.id == file_id, files.c.project == project))) \
                .mappings().first()
        return dict(row) if row else None

    def list_files(self, project: str, purpose: str | None = None, after: str | None = None, limit: int = 10000,
                   newest_first: bool = True) -> list[dict[str, Any]]:
        q = select(files).where(files.c.project == project)
        if purpose:
            q = q.where(files.c.purpose == purpose)
        q = _page(q, files, self.engine, project, after, newest_first)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.limit(limit)).mappings()]

    def delete_file(self, project: str, file_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(delete(files).where(and_(files.c.id == file_id, files.c.project == project)))
            return res.rowcount > 0

    # ---- fine_tuning.job records ------------------------------------------------------------
    def add_job(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Insert a job record; None when the project already has one with this idempotency key."""
        row = {**row, "created_at": utcnow()}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(fine_tuning_jobs).values(**row))
        except IntegrityError:
            return None
        return self.get_job(row["project"], row["id"])

    def get_job(self, project: str, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(fine_tuning_jobs).where(and_(fine_tuning_jobs.c.id == job_id,
                                                                   fine_tuning_jobs.c.project == project))) \
                .mappings().first()
        return dict(row) if row else None

    def by_idempotency_key(self, project: str, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(fine_tuning_jobs).where(and_(fine_tuning_jobs.c.project == project,
                                                                   fine_tuning_jobs.c.idempotency_key == key))) \
                .mappings().first()
        return dict(row) if row else None

    def by_model(self, name: str) -> dict[str, Any] | None:
        """The job record whose fine_tuned_model is `name` (any project: the caller checks whose)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(fine_tuning_jobs).where(fine_tuning_jobs.c.fine_tuned_model == name)) \
                .mappings().first()
        return dict(row) if row else None

    def get_with_job(self, project: str, job_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """A record and what its `fine_tuning.job` object shows of its tuneloop job, in one query."""
        with self.engine.connect() as conn:
            row = conn.execute(_GET_WITH_JOB, {"job_id": job_id, "project": project}).mappings().first()
        return None if row is None else _split(row)

    def list_with_jobs(self, project: str, after: str | None = None, limit: int = 20,
                       metadata: dict[str, str] | None = None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """list_jobs with each record's job view, in one query."""
        if not metadata:       # the API's hot path: statements built once (building one took longer than running it)
            with self.engine.connect() as conn:
                cursor = after and conn.execute(_CREATED_AT, {"id": after, "project": project}).scalar()
                params = {"project": project, "limit": limit}
                rows = conn.execute(_LIST_AFTER if cursor else _LIST_WITH_JOBS,
                                    params | ({"cursor": cursor, "after": after} if cursor else {})).mappings()
                return [_split(r) for r in rows]
        q = _page(select(fine_tuning_jobs, *JOB_VIEW).outerjoin(jobs, jobs.c.id == fine_tuning_jobs.c.id)
                  .where(fine_tuning_jobs.c.project == project), fine_tuning_jobs, self.engine, project, after, True)
        return [_split(r) for r in self._select(q, limit, metadata)]

    def _select(self, q, limit: int, metadata: dict[str, str] | None) -> list[Any]:
        with self.engine.connect() as conn:
            if not metadata:
                return list(conn.execute(q.limit(limit)).mappings())
            out = []
            for r in conn.execute(q).mappings():   # JSON filters differ by database: filter here
                if all((r["metadata"] or {}).get(k) == v for k, v in metadata.items()):
                    out.append(r)
                    if len(out) == limit:
                        break
            return out

    def list_jobs(self, project: str, after: str | None = None, limit: int = 20,
                  metadata: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Newest first, from the record after `after` (OpenAI's cursor), at most `limit`."""
        q = _page(select(fine_tuning_jobs).where(fine_tuning_jobs.c.project == project), fine_tuning_jobs,
                  self.engine, project, after, True)
        with self.engine.connect() as conn:
            if not metadata:
                return [dict(r) for r in conn.execute(q.limit(limit)).mappings()]
            out = []
            for r in conn.execute(q).mappings():   # JSON filters differ by database: filter here
                if all((r["metadata"] or {}).get(k) == v for k, v in metadata.items()):
                    out.append(dict(r))
                    if len(out) == limit:
                        break
            return out

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id).values(**values))

    def delete_job(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(fine_tuning_jobs).where(fine_tuning_jobs.c.id == job_id))

    def queued_training(self) -> list[dict[str, Any]]:
        """The API's training jobs a worker may start: queued and not yet claimed by a runner, oldest first."""
        q = (select(jobs).join(fine_tuning_jobs, fine_tuning_jobs.c.id == jobs.c.id)
             .where(and_(jobs.c.state == "queued", jobs.c.pid.is_(None), jobs.c.cancel_requested.is_(False)))
             .order_by(jobs.c.created_at, jobs.c.id))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def running_training(self) -> list[dict[str, Any]]:
        q = (select(jobs).join(fine_tuning_jobs, fine_tuning_jobs.c.id == jobs.c.id)
             .where(jobs.c.state == "running"))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


# the tuneloop job's columns a fine_tuning.job object shows (not its spec)
JOB_VIEW = (jobs.c.state.label("job_state"), jobs.c.finished_at.label("job_finished_at"),
            jobs.c.started_at.label("job_started_at"), jobs.c.plan.label("job_plan"),
            jobs.c.error.label("job_error"), jobs.c.metrics.label("job_metrics"))


_WITH_JOB = select(fine_tuning_jobs, *JOB_VIEW).outerjoin(jobs, jobs.c.id == fine_tuning_jobs.c.id)
_GET_WITH_JOB = _WITH_JOB.where(and_(fine_tuning_jobs.c.id == bindparam("job_id"),
                                     fine_tuning_jobs.c.project == bindparam("project")))
_NEWEST = (fine_tuning_jobs.c.created_at.desc(), fine_tuning_jobs.c.id.desc())
_LIST_WITH_JOBS = _WITH_JOB.where(fine_tuning_jobs.c.project == bindparam("project")).order_by(*_NEWEST) \
    .limit(bindparam("limit"))
_LIST_AFTER = _WITH_JOB.where(and_(
    fine_tuning_jobs.c.project == bindparam("project"),
    or_(fine_tuning_jobs.c.created_at < bindparam("cursor"),
        and_(fine_tuning_jobs.c.created_at == bindparam("cursor"), fine_tuning_jobs.c.id < bindparam("after"))))) \
    .order_by(*_NEWEST).limit(bindparam("limit"))
_CREATED_AT = select(fine_tuning_jobs.c.created_at).where(and_(fine_tuning_jobs.c.id == bindparam("id"),
                                                              fine_tuning_jobs.c.project == bindparam("project")))
_RECORD_KEYS = tuple(c.name for c in fine_tuning_jobs.c)
_JOB_KEYS = tuple((c.name, c.name[len("job_"):]) for c in JOB_VIEW)


def _split(row) -> tuple[dict[str, Any], dict[str, Any] | None]:
    rec = {k: row[k] for k in _RECORD_KEYS}
    if row["job_state"] is None:
        return rec, None
    return rec, {short: row[k] for k, short in _JOB_KEYS}


def _page(q, table, engine: Engine, project: str, after: str | None, newest_first: bool):
    """Order by (created_at, id) and start after the row `after` (OpenAI's `after` cursor)."""
    if newest_first:
        q = q.order_by(table.c.created_at.desc(), table.c.id.desc())
    else:
        q = q.order_by(table.c.created_at, table.c.id)
    if after:
        with engine.connect() as conn:
            cursor = conn.execute(select(table.c.created_at).where(and_(table.c.id == after,
                                                                        table.c.project == project))).scalar()
        if cursor is not None:
            if newest_first:
                q = q.where(or_(table.c.created_at < cursor, and_(table.c.created_at == cursor, table.c.id < after)))
            else:
                q = q.where(or_(table.c.created_at > cursor, and_(table.c.created_at == cursor, table.c.id > after)))
    return q
