"""A local judge's model is resolved by the one resolver and keeps its fix (`hf download ID` for a Hub
id not in the local cache), in the reward's error and in an RLAIF dry run:
`.venv/bin/python -m pytest tests/unit/test_judge_resolution.py -q`."""

from __future__ import annotations

import pytest

from tests.conftest import write_jsonl
from tuneloop.errors import ValidationError

ROWS = [{"prompt": [{"role": "user", "content": "What is 2+3?"}], "answer": "5"}]


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_missing_hub_judge_names_hf_download(empty_hub_cache, models_dir):
    from tuneloop.rewards.judge import make_judge, resolve_local_model

    with pytest.raises(ValueError, match=r"not a catalog model.*\. .*hf download acme/missing-judge"):
        resolve_local_model("acme/missing-judge", models_dir)
    # a catalog id that is not cached: refused when the judge is made, not at the first step
    with pytest.raises(ValueError, match="not in the local Hugging Face cache.*hf download meta-llama/Llama-3.2-1B"):
        make_judge("meta-llama/Llama-3.2-1B-Instruct", models_dir)


def test_an_rlaif_dry_run_with_a_missing_judge_says_how_to_get_it(home, empty_hub_cache, tmp_path):
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    svc = JobService(open_store(settings.database_url), settings)
    request = TuneRequest(technique="rlaif", dataset=str(write_jsonl(tmp_path / "rows.jsonl", ROWS)),
                          reward_prompt="Builtin.Correctness", judge_model="acme/missing-judge")
    with pytest.raises(ValidationError, match="hf download acme/missing-judge"):
        svc.prepare(request, dry_run=True)
