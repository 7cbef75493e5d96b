"""What may be deployed: adapter and model folder checks (safetensors headers, no torch),
--from-tune resolution, and the deployment state in the database."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tuneloop.serving.adapters import check_adapter, check_full_model, localize, same_base
from tuneloop.errors import AdapterError

HIDDEN, INTER, LAYERS = 128, 384, 2
LINEARS = {"self_attn.q_proj": (128, 128), "self_attn.k_proj": (64, 128), "self_attn.v_proj": (64, 128),
           "self_attn.o_proj": (128, 128), "mlp.gate_proj": (INTER, HIDDEN), "mlp.up_proj": (INTER, HIDDEN),
           "mlp.down_proj": (HIDDEN, INTER)}


def make_base(folder: Path, scale: int = 1) -> Path:
    """A model folder with the tensor names and shapes of a small Qwen3 (values are zeros)."""
    folder.mkdir(parents=True)
    tensors = {"model.embed_tokens.weight": np.zeros((16, HIDDEN * scale), np.float32)}
    for layer in range(LAYERS):
        for name, (out, inp) in LINEARS.items():
            tensors[f"model.layers.{layer}.{name}.weight"] = np.zeros((out * scale, inp * scale), np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": HIDDEN * scale}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def make_adapter(folder: Path, *, base: str = "tuneloop/tiny-qwen3", r: int = 8, scale: int = 1,
                 modules: tuple[str, ...] = ("self_attn.q_proj", "mlp.down_proj"), **config) -> Path:
    folder.mkdir(parents=True)
    tensors = {}
    for layer in range(LAYERS):
        for name in modules:
            out, inp = LINEARS[name]
            prefix = f"base_model.model.model.layers.{layer}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = np.zeros((r, inp * scale), np.float32)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros((out * scale, r), np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": [m.split(".")[-1] for m in modules],
           "base_model_name_or_path": base, "task_type": "CAUSAL_LM", "bias": "none", **config}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture
def base(tmp_path) -> Path:
    return make_base(tmp_path / "models" / "tuneloop--tiny-qwen3")


def check(path, base):
    return check_adapter(path, base_name="tuneloop/tiny-qwen3", base_folder=base)


def test_a_good_adapter_passes_with_its_rank_and_modules(tmp_path, base):
    info = check(make_adapter(tmp_path / "a", base=str(base)), base)
    assert info.rank == 8 and info.warnings == []
    assert info.modules[0] == "model.layers.0.mlp.down_proj" and len(info.modules) == 4


def test_an_adapter_trained_on_the_same_builtin_elsewhere_is_the_same_base(tmp_path, base):
    info = check(make_adapter(tmp_path / "a", base="/elsewhere/models/tuneloop--tiny-qwen3"), base)
    assert info.warnings == []
    assert same_base(["tuneloop/tiny-qwen3"], "tuneloop/tiny-qwen3", None)
    assert not same_base(["Qwen/Qwen3-0.6B"], "tuneloop/tiny-qwen3", base)


def test_another_base_name_with_fitting_shapes_is_a_warning(tmp_path, base):
    info = check(make_adapter(tmp_path / "a", base="tuneloop/tiny-llama"), base)
    assert len(info.warnings) == 1 and "trained on tuneloop/tiny-llama" in info.warnings[0]


def test_missing_adapter_config_is_refused(tmp_path, base):
    folder = make_adapter(tmp_path / "a")
    (folder / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="has no adapter_config.json: it is not a PEFT adapter folder"):
        check(folder, base)


def test_a_full_model_is_refused_with_a_pointer_to_add_ic(tmp_path, base):
    with pytest.raises(AdapterError, match="is a full model") as e:
        check(base, base)
    assert "tuneloop add-ic NAME --model-data" in e.value.hint


def test_pickle_only_weights_are_refused(tmp_path, base):
    folder = make_adapter(tmp_path / "a")
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(AdapterError, match=r"only pickle weights \(adapter_model.bin\): tuneloop loads safetensors"):
        check(folder, base)


def test_an_adapter_for_a_bigger_base_is_refused(tmp_path, base):
    folder = make_adapter(tmp_path / "a", base="tuneloop/small-qwen3", scale=4)
    with pytest.raises(AdapterError, match="does not fit the base tuneloop/tiny-qwen3 .it was trained on "
                                           "tuneloop/small-qwen3.: layer sizes differ") as e:
        check(folder, base)
    assert e.value.details[0] == "model.layers.0.mlp.down_proj: adapter 1536 -> 512, base 384 -> 128"
    assert "tuneloop deploy --model tuneloop/small-qwen3" in e.value.hint


def test_modules_the_base_lacks_are_refused(tmp_path, base):
    folder = make_adapter(tmp_path / "a")
    tensors = {"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": np.zeros((8, 128), np.float32),
               "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": np.zeros((128, 8), np.float32)}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="targets modules the base tuneloop/tiny-qwen3 does not have"):
        check(folder, base)


def test_rank_that_disagrees_with_the_config_is_refused(tmp_path, base):
    folder = make_adapter(tmp_path / "a", r=8)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "r": 16}))
    with pytest.raises(AdapterError, match="inconsistent with its adapter_config.json"):
        check(folder, base)
    # rank_pattern makes per-module ranks legal
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "r": 16, "rank_pattern": {"q_proj": 8, "down_proj": 8}}))
    assert check(folder, base).rank == 8


@pytest.mark.parametrize("extra, word", [({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
                                         ({"peft_type": "IA3"}, "only LoRA adapters")])
def test_unsupported_adapter_kinds_are_refused(tmp_path, base, extra, word):
    with pytest.raises(AdapterError, match=word):
        check(make_adapter(tmp_path / "a", **extra), base)


def test_full_model_checks(tmp_path, base):
    assert check_full_model(base).model_type == "qwen3"
    with pytest.raises(AdapterError, match="is a LoRA adapter, not a full model") as e:
        check_full_model(make_adapter(tmp_path / "a"))
    assert "tuneloop adapter add NAME --weights" in e.value.hint
    (base / "model.safetensors").rename(base / "pytorch_model.bin")
    with pytest.raises(AdapterError, match="only pickle weights"):
        check_full_model(base)
    with pytest.raises(AdapterError, match="does not exist"):
        check_full_model(tmp_path / "nowhere")


def test_localize_unpacks_an_archive_once(tmp_path, base):
    folder = make_adapter(tmp_path / "adapter")
    archive = tmp_path / "adapter.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="adapter")
    local = localize(str(archive), tmp_path / "cache")
    assert (local / "adapter_config.json").is_file() and local.name == "adapter"
    assert localize(str(archive), tmp_path / "cache") == local
    assert localize(str(folder), tmp_path / "cache") == folder
    assert check(local, base).rank == 8


# ---- deployment state and --from-tune --------------------------------------------------------
@pytest.fixture
def deps(home, tmp_path):
    from tuneloop.service.deployments import DeploymentService
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    return DeploymentService(open_store(settings.database_url), settings, "p")


def test_from_tune_refuses_a_full_model_for_adapter_add(deps, tmp_path):
    from tuneloop.errors import NotFoundError, ValidationError

    with pytest.raises(NotFoundError, match="No completed tune output"):
        deps.resolve_source("adapter", from_tune=True, ref="sft", path=None)
    full = make_base(tmp_path / "full")
    deps.store.set_config("p", {"TUNE_MODEL_PATH_SFT": str(full), "TUNE_OUTPUT_PATH_LATEST": str(full),
                                "TUNE_OUTPUT_TYPE_LATEST": "full-model"})
    with pytest.raises(ValidationError, match="is a full model") as e:
        deps.resolve_source("adapter", from_tune=True, ref="sft", path=None)
    assert "tuneloop add-ic NAME --from-tune sft" in e.value.hint
    assert deps.resolve_source("ic", from_tune=True, ref=None, path=None).path == full
    with pytest.raises(ValidationError, match="exactly one of --from-tune"):
        deps.resolve_source("adapter", from_tune=True, ref=None, path=str(full))


def test_from_tune_prefers_the_slug_key_then_the_technique(deps, tmp_path):
    a, b = make_adapter(tmp_path / "a"), make_adapter(tmp_path / "b")
    deps.store.set_config("p", {"TUNE_ADAPTER_PATH_SFT": str(b), "TUNE_ADAPTER_PATH_SFT_MY_SET": str(a),
                                "TUNE_OUTPUT_PATH_LATEST": str(b), "TUNE_OUTPUT_TYPE_LATEST": "adapter"})
    assert deps.resolve_source("adapter", from_tune=True, ref="sft-my-set", path=None).path == a
    assert deps.resolve_source("adapter", from_tune=True, ref="sft", path=None).path == b
    assert deps.resolve_source("adapter", from_tune=True, ref=None, path=None).source == "--from-tune"


def test_deployment_state_records_and_forgets(deps, tmp_path):
    from tuneloop.errors import NotFoundError, ValidationError
    from tuneloop.serving.served import Source

    assert deps.state()["base_model"] == "tuneloop/tiny-qwen3" and deps.state()["server"] is None
    deps.record("a", "adapter", Source(tmp_path / "a", "--weights a", "job-1", "g", 3), base_model="x")
    deps.record("m", "ic", Source(tmp_path / "m", "--model-data m"))
    state = deps.state()
    assert [d["name"] for d in state["adapters"]] == ["a"] and state["adapters"][0]["version"] == 3
    assert [d["name"] for d in state["inference_components"]] == ["m"]
    with pytest.raises(ValidationError, match="already deployed"):
        deps._check_name("a")
    deps.forget("a", "adapter")
    with pytest.raises(NotFoundError, match="No adapter named 'a'"):
        deps.forget("a", "adapter")
    deps.record_server("127.0.0.1", 1, 999999, "transformers", False)  # a pid that is not alive
    assert deps.running_server() is None and deps.store.get_deployment("p")["pid"] is None
