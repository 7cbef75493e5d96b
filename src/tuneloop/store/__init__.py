"""Persistent state: SQLite (default) or PostgreSQL through SQLAlchemy."""

from tuneloop.store.repo import Store, open_store

__all__ = ["Store", "open_store"]
