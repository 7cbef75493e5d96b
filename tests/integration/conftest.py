"""Train real jobs in-process (one TRL import for the whole session) through the same service
and runner code the CLI uses, just without the detached process."""

from __future__ import annotations

import pytest


@pytest.fixture
def train(home):
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.service.runner import run_job
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    def _train(technique: str, dataset: str, training_type: str = "lora", **kwargs) -> dict:
        settings = load_settings()
        svc = JobService(open_store(settings.database_url), settings)
        hp = kwargs.pop("hyperparameters", {})
        prep = svc.prepare(TuneRequest(technique=technique, dataset=str(dataset), training_type=training_type,
                                       hyperparameters=hp, **kwargs))
        job = svc.submit(prep, launch=False).job
        state = run_job(svc.store, job["id"])
        job = svc.get(job["id"])
        assert state == "completed", job["error"]
        return job

    return _train
