"""Tables and schema versioning. The schema version is stored from the first table on; each
future change appends a migration to MIGRATIONS and bumps SCHEMA_VERSION."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from sqlalchemy import (JSON, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text, UniqueConstraint, create_engine, event, select)
from sqlalchemy.engine import Connection, Engine

from tuneloop.errors import ConfigError

SCHEMA_VERSION = 9
metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),            # the job name: <project>-tune-<technique>-<ts>
    Column("project", String(64), nullable=False, index=True),
    Column("technique", String(16), nullable=False),
    Column("training_type", String(16), nullable=False),
    Column("model", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("state", String(16), nullable=False),            # queued|running|completed|failed|cancelled
    # "<project>:<technique>" while queued/running, NULL after: a unique column makes racing
    # submissions of one technique create one job (NULLs never collide, on SQLite and PostgreSQL).
    Column("active_key", String(96), unique=True, nullable=True),
    Column("spec", JSON, nullable=False),
    Column("plan", JSON, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("pid", Integer),
    Column("host", String(255)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer, nullable=False, default=0),
    Column("loss", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("job_dir", Text, nullable=False),
    Column("output_path", Text),
    Column("output_type", String(16)),                      # adapter | full-model
    Column("dataset_sha256", String(64)),
    Column("dataset_rows", Integer),
    Column("metrics", JSON),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("level", String(8), nullable=False),              # info | warn | error
    Column("type", String(16), nullable=False),              # message | metrics
    Column("message", Text, nullable=False),
    Column("data", JSON),
)

config_state = Table(
    "config_state", metadata,
    Column("project", String(64), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

model_package_groups = Table(
    "model_package_groups", metadata,
    Column("name", String(128), primary_key=True),
    Column("project", String(64), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

model_packages = Table(
    "model_packages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_name", String(128), ForeignKey("model_package_groups.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("job_id", String(64), ForeignKey("jobs.id"), nullable=False),
    Column("technique", String(16), nullable=False),
    Column("training_type", String(16), nullable=False),
    Column("base_model", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("dataset_sha256", String(64), nullable=False),
    Column("output_path", Text, nullable=False),
    Column("output_type", String(16), nullable=False),
    Column("metrics", JSON),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("group_name", "version"),
)

# ---- dataset assets (version 2) -------------------------------------------------------------------
datasets = Table(
    "datasets", metadata,
    Column("name", String(128), primary_key=True),
    Column("description", Text),
    Column("created_at", DateTime, nullable=False),
)

dataset_versions = Table(
    "dataset_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), ForeignKey("datasets.name", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("technique", String(16), nullable=False),
    Column("format", String(32), nullable=False),           # record format of the source (messages, ...)
    Column("sha256", String(64), nullable=False),            # of the staged canonical JSONL
    Column("rows", Integer, nullable=False),
    Column("columns", JSON, nullable=False),
    Column("source", Text, nullable=False),                  # as given (file, URL, hf://, name@vN)
    Column("column_map", Text),
    Column("path", Text, nullable=False),                    # staged file under TUNELOOP_HOME/datasets
    Column("parent", String(160)),                           # name@vN this version was split from
    Column("stats", JSON),                                   # counts, notes, warnings, lengths
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", "version"),
    UniqueConstraint("name", "sha256"),
)


def _migrate_2(conn: Connection) -> None:
    metadata.create_all(conn, tables=[datasets, dataset_versions])


# ---- deployments (version 3): what `tuneloop serve` serves, per project --------------------------
deployments = Table(
    "deployments", metadata,
    Column("project", String(64), primary_key=True),
    Column("base_model", Text, nullable=False),              # catalog / built-in id, or a model folder
    Column("base_path", Text),                               # the folder (or Hub id) it loads from
    Column("base_job_id", String(64)),                       # lineage when the base is a tune output
    Column("base_group", String(128)),
    Column("base_version", Integer),
    Column("engine", String(16)),                            # transformers | vllm (of the running server)
    Column("host", String(255)),                             # the running server: NULLs when none
    Column("port", Integer),
    Column("pid", Integer),
    Column("server_host", String(255)),                      # machine the server runs on
    Column("api_key_required", Boolean, nullable=False, default=False),
    Column("started_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
)

deployed_models = Table(
    "deployed_models", metadata,
    Column("project", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),           # the `model` clients send
    Column("kind", String(16), nullable=False),              # adapter | ic
    Column("source", Text, nullable=False),                  # as given: --weights/--model-data or "--from-tune REF"
    Column("path", Text, nullable=False),                    # local folder that loads
    Column("base_model", Text),                              # the base an adapter was trained on
    Column("job_id", String(64)),                            # lineage: tune job and registry version
    Column("group_name", String(128)),
    Column("version", Integer),
    Column("created_at", DateTime, nullable=False),
)


def _migrate_3(conn: Connection) -> None:
    metadata.create_all(conn, tables=[deployments, deployed_models])


# ---- evaluator assets (version 4): reward functions and reward prompts, versioned --------------------
evaluators = Table(
    "evaluators", metadata,
    Column("name", String(128), primary_key=True),
    Column("type", String(32), nullable=False),              # reward-function | reward-prompt
    Column("description", Text),
    Column("created_at", DateTime, nullable=False),
)

evaluator_versions = Table(
    "evaluator_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), ForeignKey("evaluators.name", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("type", String(32), nullable=False),
    Column("kind", String(16), nullable=False),              # builtin | file | module | http | grader | prompt
    Column("source", Text, nullable=False),                  # as given
    Column("target", Text, nullable=False),                  # what runs: a frozen copy's path, a URL, a built-in
    Column("sha256", String(64), nullable=False),            # of the content (code, JSON, prompt, or reference)
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", "version"),
    UniqueConstraint("name", "sha256"),
)


def _migrate_4(conn: Connection) -> None:
    metadata.create_all(conn, tables=[evaluators, evaluator_versions])


# ---- model artifacts (version 5): exports of a registered version (tuneloop export) ---------------
model_artifacts = Table(
    "model_artifacts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_name", String(128), ForeignKey("model_package_groups.name"), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("format", String(16), nullable=False),            # merged | gguf | ollama
    Column("quant", String(16)),                             # f16 | q8_0 | f32 (gguf, ollama)
    Column("path", Text, nullable=False),                    # the output folder
    Column("files", JSON, nullable=False),                   # file names in it
    Column("verify", JSON),                                  # the load-back check's numbers, or NULL
    Column("created_at", DateTime, nullable=False),
)


def _migrate_5(conn: Connection) -> None:
    metadata.create_all(conn, tables=[model_artifacts])


# ---- API keys (version 6): `tuneloop keys create --project P`; only the key's sha256 is kept --------
api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),             # key_<hex>: what list and revoke name
    Column("project", String(64), nullable=False, index=True),
    Column("sha256", String(64), nullable=False, unique=True),  # of the key; the key itself is never stored
    Column("redacted", String(16), nullable=False),          # sk-...abcd, to tell keys apart
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
    Column("revoked_at", DateTime),
)


def _migrate_6(conn: Connection) -> None:
    metadata.create_all(conn, tables=[api_keys])


# ---- the OpenAI fine-tuning API (version 7): uploaded files and fine_tuning.job records -------------
files = Table(
    "files", metadata,
    Column("id", String(40), primary_key=True),             # file-<hex>: what the API names
    Column("project", String(64), nullable=False, index=True),
    Column("filename", Text, nullable=False),                # as uploaded
    Column("purpose", String(32), nullable=False),           # fine-tune
    Column("bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("lines", Integer),                                # JSON lines checked at upload
    Column("path", Text, nullable=False),                    # under TUNELOOP_HOME/files/<project>/
    Column("created_at", DateTime, nullable=False),
)

fine_tuning_jobs = Table(
    "fine_tuning_jobs", metadata,
    Column("id", String(64), primary_key=True),              # ftjob-<hex>; the tuneloop job has the same id
    Column("project", String(64), nullable=False, index=True),
    Column("status", String(24), nullable=False),            # validating_files | submitted | failed | cancelled
    Column("model", Text, nullable=False),                   # as requested
    Column("training_file", String(40), nullable=False),
    Column("validation_file", String(40)),
    Column("method", JSON, nullable=False),                  # {type, <type>: {hyperparameters}} as requested
    Column("suffix", String(64)),
    Column("seed", Integer),
    Column("metadata", JSON),
    Column("fine_tuned_model", Text),                        # ft:BASE:ORG:SUFFIX:ID (served once succeeded)
    Column("error", JSON),                                   # {code, message, param} of a validation failure
    Column("created_at", DateTime, nullable=False),
    Column("finished_at", DateTime),                         # of a job that never reached the runner
    Column("idempotency_key", String(128)),                  # v8: the client's Idempotency-Key header
    Index("ix_fine_tuning_jobs_idempotency", "project", "idempotency_key", unique=True),
    Index("ix_fine_tuning_jobs_listing", "project", "created_at", "id"),   # v8: newest-first pages
)


def _migrate_7(conn: Connection) -> None:
    metadata.create_all(conn, tables=[files, fine_tuning_jobs])


def _migrate_8(conn: Connection) -> None:
    """Idempotency keys of job creations (racing retries of one request create one job; NULLs never
    collide) and the index newest-first job pages read."""
    from sqlalchemy import inspect

    found = inspect(conn)   # migration 7 creates the table from today's columns when it runs first
    if "idempotency_key" not in {c["name"] for c in found.get_columns("fine_tuning_jobs")}:
        conn.exec_driver_sql("ALTER TABLE fine_tuning_jobs ADD COLUMN idempotency_key VARCHAR(128)")
    indexes = {i["name"] for i in found.get_indexes("fine_tuning_jobs")}
    if "ix_fine_tuning_jobs_idempotency" not in indexes:
        conn.exec_driver_sql("CREATE UNIQUE INDEX ix_fine_tuning_jobs_idempotency ON fine_tuning_jobs "
                             "(project, idempotency_key)")
    if "ix_fine_tuning_jobs_listing" not in indexes and "created_at" in {
            c["name"] for c in found.get_columns("fine_tuning_jobs")}:
        conn.exec_driver_sql("CREATE INDEX ix_fine_tuning_jobs_listing ON fine_tuning_jobs (project, created_at, id)")


# ---- webhooks per project (version 9): where a fine-tuning job's end is posted, and each post ----
webhooks = Table(
    "webhooks", metadata,
    Column("id", String(32), primary_key=True),              # wh_<hex>: what list and remove name
    Column("project", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("secret", String(80), nullable=False),            # whsec_<base64>: the receiver verifies with it
    Column("created_at", DateTime, nullable=False),          # jobs that end from then on are posted
)
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(40), primary_key=True),              # msg_<hex>: the webhook-id header, kept across retries
    Column("webhook_id", String(32), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("type", String(48), nullable=False),              # fine_tuning.job.succeeded | failed | cancelled
    Column("body", Text, nullable=False),                    # the event as posted, byte for byte each time
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime, nullable=False),             # when the next attempt is due (or the lease ends)
    Column("delivered_at", DateTime),
    Column("last_error", Text),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("webhook_id", "job_id", name="uq_webhook_deliveries_job"),   # one post per job and hook
)


def _migrate_9(conn: Connection) -> None:
    metadata.create_all(conn, tables=[webhooks, webhook_deliveries])


# version N -> function upgrading a database at version N-1
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5,
                                                       6: _migrate_6, 7: _migrate_7, 8: _migrate_8, 9: _migrate_9}


def _json_loads(text: str | bytes) -> Any:
    """JSON columns read back by orjson (a job list decodes ~80 of them; stdlib json was a fifth of
    its time); what orjson refuses but stdlib json wrote (a NaN or Infinity metric) by json. orjson
    reads an integer over 64 bits as a float; the JSON columns hold none (seeds and counts are bounded)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, json_deserializer=_json_loads)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # several processes share the file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, json_deserializer=_json_loads)


def migrate(engine: Engine) -> None:
    """Create the schema on a new database; upgrade an older one; refuse a newer one."""
    if engine.url.get_backend_name() == "sqlite" and engine.url.database:
        from filelock import FileLock

        with FileLock(engine.url.database + ".migrate.lock"):  # processes racing on a new file
            _migrate(engine)
    else:
        _migrate(engine)


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        metadata.create_all(conn, tables=[schema_version])
        current = conn.execute(select(schema_version.c.version)).scalar()
        if current is None:
            metadata.create_all(conn)
            conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
            return
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"The database at {engine.url} has schema version {current}, newer than this tuneloop "
                f"({SCHEMA_VERSION}).", hint="Upgrade tuneloop, or point TUNELOOP_HOME at another folder.")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            conn.execute(schema_version.update().values(version=version))
