"""The registry page's Deploy and Export: a trained version is deployed through the deployment
service (recorded with its lineage when no server runs, and the page says how to start one; a
taken name is refused in place), and exported through the export service (merged safetensors,
loaded back), which lists it among the version's exports."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO_DATA


def train(services, training_type: str = "lora") -> str:
    from tuneloop.service.runner import run_job
    from tuneloop.spec import TuneRequest

    req = TuneRequest(technique="sft", dataset=str(DEMO_DATA / "sft.jsonl"), training_type=training_type,
                      hyperparameters={"max_steps": 5})
    job = services.jobs.submit(services.jobs.prepare(req), launch=False).job
    assert run_job(services.store, job["id"]) == "completed", services.jobs.get(job["id"])["error"]
    return job["id"]


@pytest.fixture
def trained(home):
    from tuneloop.service.app import open_services

    services = open_services()
    return services, train(services)


def test_deploy_and_export_a_registered_version(trained, tmp_path):
    from tuneloop.ui import create_ui

    services, job_id = trained
    c = TestClient(create_ui(services))
    page = c.get("/registry").text
    assert "No server is running for project default" in page and "tuneloop serve --project default" in page
    assert 'value="tune-models-v1"' in page and "Deploy adapter" in page

    r = c.post("/registry/deploy", data={"group": "default-tune-models", "version": "1", "name": "tune-models-v1"})
    assert r.status_code == 200, r.text[:600]
    assert "Adapter tune-models-v1 deployed from default-tune-models v1 (recorded; the next `tuneloop serve` serves it)" \
        in r.text
    [d] = services.deployments("default").deployed("adapter")
    assert (d["name"], d["job_id"], d["group_name"], d["version"]) == ("tune-models-v1", job_id,
                                                                        "default-tune-models", 1)
    assert "<td>tune-models-v1</td>" in r.text                       # served as
    again = c.post("/registry/deploy", data={"group": "default-tune-models", "version": "1", "name": "tune-models-v1"})
    assert again.status_code == 400 and "already deployed" in again.text and "tuneloop adapter remove" in again.text
    missing = c.post("/registry/deploy", data={"group": "default-tune-models", "version": "9", "name": "x"})
    assert missing.status_code == 400 and "No registered version default-tune-models v9" in missing.text

    out = services.settings.home / "exports" / "tune-models-v1"
    r = c.post("/registry/export", data={"group": "default-tune-models", "version": "1", "format": "merged",
                                         "output": "tune-models-v1", "verify": "on"})
    assert r.status_code == 200, r.text[:600]
    assert f"merged export of default-tune-models v1: {out}" in r.text and "verified" in r.text
    assert (out / "config.json").exists()
    [a] = services.store.list_artifacts("default-tune-models", 1)
    assert a["format"] == "merged" and f"merged: <code>{a['path']}</code>" in r.text
    bad = c.post("/registry/export", data={"group": "default-tune-models", "version": "1", "format": "onnx",
                                           "output": "x"})
    assert bad.status_code == 400 and "Could not export" in bad.text and "merged" in bad.text
    elsewhere = c.post("/registry/export", data={"group": "default-tune-models", "version": "1", "format": "merged",
                                                 "output": str(tmp_path / "x")})     # a path, not a folder name
    assert elsewhere.status_code == 400 and "is not a folder name" in elsewhere.text and not (tmp_path / "x").exists()


def test_a_full_model_version_deploys_as_an_inference_component(home):
    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui

    services = open_services()
    job_id = train(services, "full")
    [p] = services.store.list_packages(project="default")
    assert p["output_type"] != "adapter"
    c = TestClient(create_ui(services))
    assert "Deploy as an inference component" in c.get("/registry").text
    r = c.post("/registry/deploy", data={"group": p["group_name"], "version": str(p["version"]), "name": "full-v1"})
    assert r.status_code == 200, r.text[:600]
    assert "Inference component full-v1 deployed from" in r.text
    [d] = services.deployments("default").deployed("ic")
    assert (d["name"], d["job_id"]) == ("full-v1", job_id)
