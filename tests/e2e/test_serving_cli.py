"""The deployment commands without a server: they record what `tuneloop serve` will serve, refuse
bad input with exit 1 and a fix, and never import torch."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, heavy_imports
from tests.unit.test_serving_adapters import make_adapter, make_base


@pytest.mark.parametrize("argv", [["serve", "--help"], ["adapter", "list"], ["deployment"], ["test", "--help"],
                                  ["add-ic", "--help"], ["deploy", "--help"]])
def test_deployment_commands_do_not_import_torch(home, argv):
    assert heavy_imports(*argv, modules=("torch", "transformers", "peft", "fastapi", "uvicorn")) == []


def test_recorded_without_a_server_then_listed_and_removed(home, models_dir, tmp_path):
    adapter = make_adapter(tmp_path / "my-adapter", base="tuneloop/tiny-qwen3",
                           modules=("self_attn.q_proj", "self_attn.v_proj"))
    r = cli("adapter", "add", "mine", "--weights", str(adapter))
    assert r.returncode == 0, r.stderr
    assert "✅ Adapter mine added" in r.stdout and "recorded; `tuneloop serve` will serve it" in r.stdout
    listed = json.loads(cli("adapter", "list", "--json").stdout)
    assert [(a["name"], a["source"], a["kind"]) for a in listed] == [("mine", str(adapter), "adapter")]
    r = cli("adapter", "add", "mine", "--weights", str(adapter))
    assert r.returncode == 1 and "'mine' is already deployed" in r.stderr
    state = json.loads(cli("deployment", "--json").stdout)
    assert state["base_model"] == "tuneloop/tiny-qwen3" and state["server"] is None
    assert "Server: not running" in cli("deployment").stdout
    r = cli("adapter", "remove", "mine")
    assert r.returncode == 0 and json.loads(cli("adapter", "list", "--json").stdout) == []
    r = cli("adapter", "remove", "mine")
    assert r.returncode == 1 and "No adapter named 'mine'" in r.stderr


def test_bad_input_exits_1_with_a_fix(home, models_dir, tmp_path):
    r = cli("adapter", "add", "x", "--from-tune")
    assert r.returncode == 1 and "No completed tune output" in r.stderr and "tuneloop tune" in r.stderr
    r = cli("adapter", "add", "x")
    assert r.returncode == 1 and "exactly one of --from-tune [T|T-SLUG] and --weights PATH" in r.stderr
    r = cli("adapter", "add", "x", "--weights", str(tmp_path / "missing"))
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli("add-ic", "full", "--model-data", str(make_adapter(tmp_path / "a")))
    assert r.returncode == 1 and "is a LoRA adapter, not a full model" in r.stderr
    assert "tuneloop adapter add NAME --weights" in r.stderr
    r = cli("add-ic", "full", "--model-data", str(make_base(tmp_path / "full")))
    assert r.returncode == 0 and "Inference component full added" in r.stdout, r.stderr
    r = cli("test", "--prompt", "hi")
    assert r.returncode == 1 and "No server is running for project 'default'" in r.stderr
    assert "tuneloop serve" in r.stderr and "Traceback" not in r.stderr
    r = cli("serve", "--engine", "vllm")
    assert r.returncode == 1 and "needs the vllm package" in r.stderr
