import threading

from tuneloop.store.db import SCHEMA_VERSION, make_engine, migrate, schema_version
from tuneloop.store.repo import Store


def _store(tmp_path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    migrate(engine)
    return Store(engine)


def _row(name, technique="sft"):
    return dict(id=name, project="p", technique=technique, training_type="lora", model="m", dataset="d",
                spec={}, plan={}, job_dir="/tmp/x")


def test_schema_version_is_recorded_and_migrate_is_idempotent(tmp_path):
    store = _store(tmp_path)
    migrate(store.engine)
    with store.engine.connect() as conn:
        assert conn.execute(schema_version.select()).scalar() == SCHEMA_VERSION


def test_one_active_job_per_technique_even_when_racing(tmp_path):
    store = _store(tmp_path)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(store.insert_job(_row(f"j{i}")))) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results.count(True) == 1
    assert store.insert_job(_row("dpo-job", "dpo"))  # techniques never interfere


def test_finished_job_frees_its_technique(tmp_path):
    store = _store(tmp_path)
    assert store.insert_job(_row("a"))
    store.update_job("a", state="completed")
    assert store.get_job("a")["active_key"] is None and store.get_job("a")["finished_at"] is not None
    assert store.insert_job(_row("b"))


def test_claim_has_one_winner(tmp_path):
    store = _store(tmp_path)
    store.insert_job(_row("a"))
    assert store.claim_job("a", 100, "h")
    assert not store.claim_job("a", 101, "h")                  # already claimed
    assert store.claim_job("a", 102, "h", expect_pid=100)     # restart of a dead runner
    assert not store.claim_job("a", 103, "h", expect_pid=100)  # a second restart loses
    assert store.get_job("a")["attempts"] == 2


def test_registry_versions_and_config_state(tmp_path):
    store = _store(tmp_path)
    for name in ("a", "b"):
        store.insert_job(_row(name))
        store.update_job(name, state="completed")
    pkg = dict(technique="sft", training_type="lora", base_model="m", dataset="d", dataset_sha256="0" * 64,
               output_path="/o", output_type="adapter", metrics={})
    assert store.register_package("p-tune-models", "p", {**pkg, "job_id": "a"}) == 1
    assert store.register_package("p-tune-models", "p", {**pkg, "job_id": "b"}) == 2
    assert store.register_package("p-tune-models", "p", {**pkg, "job_id": "a"}) == 1  # once per job
    assert [p["version"] for p in store.list_packages(project="p")] == [1, 2]
    store.set_config("p", {"TUNE_TECHNIQUE": "sft"})
    store.set_config("p", {"TUNE_TECHNIQUE": "dpo"})
    assert store.get_config("p") == {"TUNE_TECHNIQUE": "dpo"}


def test_a_runner_that_keeps_dying_fails_the_job_instead_of_looping(tmp_path, monkeypatch):
    from tuneloop.service import jobs as jobs_mod
    from tuneloop.service.jobs import JobService
    from tuneloop.settings import Settings

    store = _store(tmp_path)
    (tmp_path / "job").mkdir()
    store.insert_job({**_row("a"), "job_dir": str(tmp_path / "job")})
    (tmp_path / "job" / "runner.log").write_text("ImportError: broken install\n")
    svc = JobService(store, Settings(tmp_path, "sqlite://", tmp_path / "models"))
    launched = []
    monkeypatch.setattr(svc, "launch", lambda job_id, expect_pid=None: launched.append(job_id))
    monkeypatch.setattr(svc, "is_stale", lambda job: job["state"] in ("queued", "running"))
    monkeypatch.setattr(jobs_mod, "RESTART_GRACE_S", 0.0)
    for _ in range(5):
        job = svc.recover(store.get_job("a"))
    assert len(launched) == jobs_mod.MAX_RESTARTS
    assert job["state"] == "failed" and "ImportError: broken install" in job["error"]


def test_a_restarted_runner_gets_time_to_start(tmp_path, monkeypatch):
    from tuneloop.service.jobs import JobService
    from tuneloop.settings import Settings

    store = _store(tmp_path)
    store.insert_job(_row("a"))
    svc = JobService(store, Settings(tmp_path, "sqlite://", tmp_path / "models"))
    launched = []
    monkeypatch.setattr(svc, "launch", lambda job_id, expect_pid=None: launched.append(job_id))
    monkeypatch.setattr(svc, "is_stale", lambda job: True)
    for _ in range(5):
        svc.recover(store.get_job("a"))
    assert len(launched) == 1


def test_a_version_7_database_gets_the_idempotency_key_and_keeps_its_jobs(tmp_path):
    """v8 adds fine_tuning_jobs.idempotency_key (unique per project) to a database made at v7."""
    from sqlalchemy import inspect, text

    engine = make_engine(f"sqlite:///{tmp_path / 'v7.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO schema_version VALUES (7)")
        conn.exec_driver_sql("CREATE TABLE fine_tuning_jobs (id VARCHAR(64) PRIMARY KEY, project VARCHAR(64))")
        conn.exec_driver_sql("INSERT INTO fine_tuning_jobs VALUES ('ftjob-1', 'p')")
    migrate(engine)
    cols = {c["name"] for c in inspect(engine).get_columns("fine_tuning_jobs")}
    assert "idempotency_key" in cols
    with engine.begin() as conn:
        assert conn.execute(text("select id from fine_tuning_jobs")).scalar() == "ftjob-1"
        conn.exec_driver_sql("UPDATE fine_tuning_jobs SET idempotency_key = 'k'")
        conn.exec_driver_sql("INSERT INTO fine_tuning_jobs (id, project, idempotency_key) VALUES ('ftjob-2', 'q', 'k')")
    import pytest
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:    # one key, one job per project
        conn.exec_driver_sql("INSERT INTO fine_tuning_jobs (id, project, idempotency_key) VALUES ('ftjob-3', 'p', 'k')")


def test_json_columns_read_back_nan_and_infinity_as_written(tmp_path):
    store = _store(tmp_path)   # orjson reads them (store/db.py), stdlib json what orjson refuses
    store.insert_job({**_row("j"), "plan": {"loss": float("nan"), "grad": float("inf"), "steps": 3, "s": "é"}})
    plan = store.get_job("j")["plan"]
    assert plan["loss"] != plan["loss"] and plan["grad"] == float("inf") and plan["steps"] == 3 and plan["s"] == "é"
