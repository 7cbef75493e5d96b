"""Webhooks per project and their deliveries in the store (`store.webhooks`: db.webhooks,
db.webhook_deliveries); service/webhooks.py decides what to post and posts it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from tuneloop.store.db import fine_tuning_jobs, jobs, utcnow, webhook_deliveries, webhooks
from tuneloop.store.finetuning import JOB_VIEW, _split


class WebhookStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "created_at": utcnow()}
        with self.engine.begin() as conn:
            conn.execute(insert(webhooks).values(**row))
        return row

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        q = select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id)
        if project is not None:
            q = q.where(webhooks.c.project == project)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def remove(self, webhook_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id)).rowcount > 0

    def ended_since(self, hook: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The hook's project's fine-tuning jobs (record, job view) that ended after the hook was
        made and have no delivery for it yet."""
        ended = func.coalesce(jobs.c.finished_at, fine_tuning_jobs.c.finished_at)
        posted = select(webhook_deliveries.c.job_id).where(webhook_deliveries.c.webhook_id == hook["id"])
        q = select(fine_tuning_jobs, *JOB_VIEW).outerjoin(jobs, jobs.c.id == fine_tuning_jobs.c.id).where(and_(
            fine_tuning_jobs.c.project == hook["project"], ended >= hook["created_at"],
            fine_tuning_jobs.c.id.not_in(posted)))
        with self.engine.connect() as conn:
            return [_split(r) for r in conn.execute(q).mappings()]

    def add_delivery(self, row: dict[str, Any], now: datetime) -> bool:
        """A delivery due at `now`; False when this hook already has one for this job (another server made it)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(webhook_deliveries).values(**row, attempts=0, next_at=now, created_at=utcnow()))
        except IntegrityError:
            return False
        return True

    def due(self, now: datetime, max_attempts: int) -> list[dict[str, Any]]:
        q = select(webhook_deliveries, webhooks.c.url, webhooks.c.secret) \
            .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id) \
            .where(and_(webhook_deliveries.c.delivered_at.is_(None), webhook_deliveries.c.attempts < max_attempts,
                        webhook_deliveries.c.next_at <= now)).order_by(webhook_deliveries.c.next_at)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def claim(self, row: dict[str, Any], until: datetime) -> bool:
        """Lease a due delivery until `until` (one server posts it, not two): True when this one got it."""
        with self.engine.begin() as conn:
            return conn.execute(update(webhook_deliveries).where(and_(
                webhook_deliveries.c.id == row["id"], webhook_deliveries.c.next_at == row["next_at"],
                webhook_deliveries.c.delivered_at.is_(None))).values(next_at=until)).rowcount == 1

    def finish(self, delivery_id: str, *, attempts: int, delivered_at: datetime | None, next_at: datetime,
               error: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
                attempts=attempts, delivered_at=delivered_at, next_at=next_at, last_error=error))

    def deliveries(self, webhook_id: str | None = None) -> list[dict[str, Any]]:
        q = select(webhook_deliveries).order_by(webhook_deliveries.c.created_at)
        if webhook_id is not None:
            q = q.where(webhook_deliveries.c.webhook_id == webhook_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
