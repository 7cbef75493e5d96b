"""Dataset assets: versions keyed by content, splits, deletes, and the SDK's DataSet."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DEMO_DATA, write_jsonl
from tuneloop.errors import NotFoundError, ValidationError


@pytest.fixture
def assets(home):
    from tuneloop.service.app import open_services

    return open_services().datasets


def test_identical_content_adds_no_version(assets, home, tmp_path):
    row, staged = assets.create("demo-sft", str(DEMO_DATA / "sft.jsonl"), "sft")
    assert (row["ref"], row["created"], row["rows"]) == ("demo-sft@v1", True, 16)
    assert row["path"] == str(home / "datasets" / "demo-sft" / "v1" / "data.jsonl")
    assert (home / "datasets" / "demo-sft" / "v1" / "meta.json").is_file()
    # same content through another source and format: still v1
    rows = [json.loads(x) for x in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]
    other = write_jsonl(tmp_path / "io.jsonl", [{"input": r["prompt"], "output": r["completion"]} for r in rows])
    again, _ = assets.create("demo-sft", str(other), "sft")
    assert (again["ref"], again["created"]) == ("demo-sft@v1", False)
    v2, _ = assets.create("demo-sft", str(DEMO_DATA / "sft.jsonl"), "sft", take=4)
    assert (v2["ref"], v2["rows"]) == ("demo-sft@v2", 4)
    assert [r["ref"] for r in assets.versions("demo-sft")] == ["demo-sft@v1", "demo-sft@v2"]
    assert assets.get("demo-sft")["ref"] == "demo-sft@v2" and assets.get("demo-sft@v1")["rows"] == 16
    assert [r["versions"] for r in assets.list()] == [2]
    assert assets.sample(v2, 2)[0] == {"prompt": "What is the capital of France?", "completion": "Paris."}
    assert v2["stats"]["lengths"]["completion"]["max"] > 0


def test_split_is_deterministic(assets):
    assets.create("demo-dpo", str(DEMO_DATA / "dpo.jsonl"), "dpo")
    train, val = assets.split("demo-dpo", ratio=0.75, seed=7)
    assert (train["ref"], val["ref"], train["rows"], val["rows"]) == ("demo-dpo-train@v1", "demo-dpo-validation@v1", 18, 6)
    assert train["parent"] == "demo-dpo@v1" and val["stats"]["split"] == {"ratio": 0.75, "seed": 7, "part": "validation"}
    again = assets.split("demo-dpo@v1", ratio=0.75, seed=7)
    assert [r["created"] for r in again] == [False, False]
    other = assets.split("demo-dpo", ratio=0.75, seed=8)
    assert other[1]["ref"] == "demo-dpo-validation@v2" and other[1]["sha256"] != val["sha256"]
    t = {json.dumps(r) for r in assets.sample(train, 100)}
    v = {json.dumps(r) for r in assets.sample(val, 100)}
    assert not t & v and len(t | v) == 24


def test_delete_and_errors(assets, home):
    assets.create("a", str(DEMO_DATA / "sft.jsonl"), "sft")
    assets.create("a", str(DEMO_DATA / "sft.jsonl"), "sft", take=3)
    assert [r["ref"] for r in assets.delete("a@v1")] == ["a@v1"]
    assert not (home / "datasets" / "a" / "v1").exists() and (home / "datasets" / "a" / "v2").exists()
    assets.delete("a")
    assert assets.list() == [] and not (home / "datasets" / "a").exists()
    with pytest.raises(NotFoundError):
        assets.get("a")
    with pytest.raises(NotFoundError):
        assets.delete("a")
    with pytest.raises(ValidationError, match="not valid"):
        assets.create("Bad Name", str(DEMO_DATA / "sft.jsonl"), "sft")


def test_sdk_dataset(home, tmp_path):
    from tuneloop import CustomizationTechnique, DataSet

    ds = DataSet.create(name="sdk-sft", source=str(DEMO_DATA / "sft.jsonl"),
                        customization_technique=CustomizationTechnique.SFT)
    assert (str(ds), ds.version, ds.rows, ds.customization_technique) == ("sdk-sft@v1", 1, 16, CustomizationTechnique.SFT)
    assert DataSet.get("sdk-sft") == ds and [d.ref for d in DataSet.get_all()] == ["sdk-sft@v1"]
    train, val = ds.split(train_split_ratio=0.75)
    assert (train.rows, val.rows, train.parent) == (12, 4, "sdk-sft@v1")
    assert [d.ref for d in ds.get_versions()] == ["sdk-sft@v1"]
    with pytest.raises(ValidationError, match="customization_technique"):
        DataSet.create(name="x", source=str(DEMO_DATA / "sft.jsonl"))


def test_registered_dataset_as_a_source(assets, tmp_path):
    from tuneloop.data.stage import stage_dataset

    assets.create("reg", str(DEMO_DATA / "sft.jsonl"), "sft")
    res = stage_dataset("reg@v1", "sft", tmp_path / "o.jsonl", lookup=assets.store.get_dataset_version)
    assert res.dataset_version == "reg@v1" and res.sha256 == assets.get("reg")["sha256"]


def test_migration_from_version_1_adds_the_dataset_tables(tmp_path):
    from sqlalchemy import inspect, text

    from tuneloop.store.db import SCHEMA_VERSION, make_engine, metadata, migrate, schema_version

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old = [t for name, t in metadata.tables.items() if name not in ("datasets", "dataset_versions")]
    with engine.begin() as conn:
        metadata.create_all(conn, tables=old)
        conn.execute(schema_version.insert().values(version=1))
    migrate(engine)
    assert {"datasets", "dataset_versions"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("select version from schema_version")).scalar() == SCHEMA_VERSION


def test_a_job_records_the_dataset_version_and_a_validation_split(home):
    from tuneloop.service.app import open_services
    from tuneloop.service.jobs import TuneRequest

    services = open_services()
    svc = services.jobs
    services.datasets.create("jobdata", str(DEMO_DATA / "sft.jsonl"), "sft")
    prep = svc.prepare(TuneRequest(technique="sft", dataset="jobdata", validation_split=0.25,
                                   hyperparameters={"seed": 3}))
    job = svc.submit(prep, launch=False).job
    spec = job["spec"]
    assert spec["dataset_version"] == "jobdata@v1" and spec["dataset_rows"] == 12 and spec["validation_rows"] == 4
    assert spec["dataset_sha256"] == job["dataset_sha256"] and job["dataset_rows"] == 12
    data = home / "projects" / "default" / "jobs" / job["id"] / "data"
    assert sorted(p.name for p in data.iterdir()) == ["train.jsonl", "validation.jsonl"]
    on_disk = json.loads((data.parent / "spec.json").read_text())
    assert on_disk["dataset_version"] == "jobdata@v1" and on_disk["validation_split"] == 0.25
    with pytest.raises(ValidationError, match="not both"):
        svc.prepare(TuneRequest(technique="sft", dataset="jobdata", validation_split=0.1,
                                validation_dataset=str(DEMO_DATA / "sft.jsonl")))
