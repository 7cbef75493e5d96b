"""A GGUF file as an inference component (`tuneloop add-ic NAME --model-data X.gguf`) or as a request's
`model_path`, like `tuneloop serve --model X.gguf`: converted once by the resolver into its cached
folder (the session's conversion of the real model, fixture `real_model_folder`), after the same
path guards as a folder: `.venv/bin/python -m pytest tests/e2e/test_serving_gguf.py -q`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli
from tuneloop.errors import WeightsLocationError

pytestmark = pytest.mark.slow   # the session's conversion of the real model when no other test has made it


def test_add_ic_serves_a_gguf_file_from_its_converted_folder(home, real_gguf, real_model_folder):
    r = cli("add-ic", "smol", "--model-data", str(real_gguf), "--json")
    assert r.returncode == 0, r.stderr
    change = json.loads(r.stdout)
    assert change["kind"] == "ic" and change["path"] == str(real_model_folder)   # the same conversion, not another
    deployed = json.loads(cli("deployment", "--json").stdout)
    [ic] = [d for d in deployed["inference_components"] if d["name"] == "smol"]
    assert ic["path"] == str(real_model_folder) and ic["source"] == str(real_gguf)   # restarts load the folder


def test_a_non_model_file_is_refused_as_model_data(home, tmp_path):
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x80\x04not a model")
    r = cli("add-ic", "junk", "--model-data", str(junk))
    assert r.returncode == 1 and "is a file; a model is a folder" in r.stderr and "never loads pickled" in r.stderr


class RecordingEngine:
    """What ServedModels asks of an engine when it adds a model or swaps the base."""

    def __init__(self):
        from tuneloop.serving.engine import BaseModel

        self.base, self.loaded = BaseModel("base", "/nowhere"), []

    def add_model(self, name, path):
        self.loaded.append((name, path))

    def replace_base(self, base):
        self.base = base
        return []


def test_a_requests_model_path_may_be_a_gguf_file_under_a_model_root(real_gguf, real_model_folder, models_dir):
    from tuneloop.serving.served import ServedModels
    from tuneloop.serving.weights import WeightPolicy

    engine = RecordingEngine()
    outside = ServedModels(engine, None, WeightPolicy(roots=(models_dir.resolve(),)))
    with pytest.raises(WeightsLocationError, match="outside the folders this server loads weights from"):
        outside.add_model("smol", str(real_gguf))   # the guard is on the file the request names
    assert engine.loaded == []

    served = ServedModels(engine, None, WeightPolicy(roots=(models_dir.resolve(), real_gguf.parent.resolve())))
    assert served.add_model("smol", str(real_gguf)) == str(real_model_folder)
    assert engine.loaded == [("smol", str(real_model_folder))]
    path, dropped = served.replace_base("smol-base", str(real_gguf))
    assert path == str(real_model_folder) == engine.base.path and dropped == []
    assert Path(path, "config.json").is_file()
