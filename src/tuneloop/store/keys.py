"""API keys in the store (`store.keys`): rows of db.api_keys, looked up by the key's sha256 (the
key itself is never stored); service/keys.py makes and checks them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from tuneloop.store.db import api_keys, utcnow


class KeyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, key_id: str, project: str, sha256: str, redacted: str) -> dict[str, Any]:
        row = {"id": key_id, "project": project, "sha256": sha256, "redacted": redacted,
               "created_at": utcnow(), "last_used_at": None, "revoked_at": None}
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**row))
        return row

    def by_sha256(self, sha256: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.sha256 == sha256)).mappings().first()
        return dict(row) if row else None

    def get(self, key_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return dict(row) if row else None

    def list(self, project: str | None = None) -> list[dict[str, Any]]:
        q = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if project:
            q = q.where(api_keys.c.project == project)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def any(self) -> bool:
        """Whether any key was ever created (revoked ones count)."""
        with self.engine.connect() as conn:
            return conn.execute(select(api_keys.c.id).limit(1)).first() is not None

    def revoke(self, key_id: str) -> None:
        """Revoke a key; a second revoke keeps the first time."""
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=utcnow()))

    def touch(self, key_id: str, when: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=when))
