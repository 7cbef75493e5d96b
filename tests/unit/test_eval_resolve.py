"""What `tuneloop eval --model REF` accepts: an adapter or model folder, a registered version
GROUP@vN, a deployed name, a catalog / built-in id; anything else is a clear error."""

from __future__ import annotations

import json

import pytest

from tuneloop.errors import ValidationError
from tuneloop.evaluation.run import resolve_eval_model


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")   # resolution reads names, not tensors
    return folder


def test_folders(adapter, tmp_path):
    m = resolve_eval_model(str(adapter))
    assert (m.base, m.adapter) == ("/models/base", str(adapter.resolve()))
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    (full / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ValidationError, match="only pickled weights"):   # never unpickled
        resolve_eval_model(str(full))
    (full / "model.safetensors").write_bytes(b"")
    assert resolve_eval_model(str(full)).adapter is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="neither a model folder"):
        resolve_eval_model(str(tmp_path / "empty"))


def test_deployed_names_and_unknown_references(home, adapter):
    from tuneloop.service.models import store_lookups
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    store = open_store(load_settings().database_url)
    lookups = store_lookups(store)
    store.upsert_deployed("default", "tuned-sft", {"kind": "adapter", "source": "--weights x", "path": str(adapter),
                                                    "base_model": "/models/base"})
    assert resolve_eval_model("tuned-sft", lookups=lookups).adapter == str(adapter.resolve())
    # GROUP@vN of a real job's registered output: tests/integration/test_eval.py
    with pytest.raises(ValidationError, match="No registered version 'my-models@v2'"):
        resolve_eval_model("my-models@v2", lookups=lookups)
    with pytest.raises(ValidationError, match="is not a folder, a job, a registered version"):
        resolve_eval_model("no-such-thing", lookups=lookups)


def test_data_that_fits_no_format_gets_the_closest_formats_error(home, tmp_path):
    from tuneloop.evaluation.run import EvalRequest, check_request

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "Copy red"}], "answer": "red"}) + "\n")
    with pytest.raises(ValidationError) as err:  # sft and rlvr each lack one column; dpo lacks two
        check_request(EvalRequest(model="tuneloop/tiny-qwen3", dataset=str(data)))
    assert err.value.missing in (["completion"], ["reward_model"]) and "Pass --technique to choose" in err.value.hint
    with pytest.raises(ValidationError) as err:
        check_request(EvalRequest(model="tuneloop/tiny-qwen3", dataset=str(data), technique="rlvr"))
    assert err.value.missing == ["reward_model"] and "pass --evaluator REF" in err.value.hint
    technique, rows = check_request(EvalRequest(model="tuneloop/tiny-qwen3", dataset=str(data),
                                                evaluators=["builtin:exact_match"]))
    assert (technique, rows) == ("rlvr", 1)
