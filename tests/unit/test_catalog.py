"""The Supported Model Catalog: contents, lookups, errors, staleness, defaults, file schema."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneloop.catalog import (
    TECHNIQUES,
    TRAINING_TYPES,
    Catalog,
    ModelEntry,
    load_catalog,
    normalize_technique,
    normalize_training_type,
)
from tuneloop.errors import CatalogError, ValidationError

CATALOG_JSON = Path(__file__).resolve().parents[2] / "src" / "tuneloop" / "catalog" / "catalog.json"

SEED_MODELS = {
    "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-32B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct",
    "Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B",
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-27B",
    "Qwen/Qwen3.6-27B",
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "openai/gpt-oss-20b", "openai/gpt-oss-120b",
}
BUILTINS = {"tuneloop/tiny-qwen3", "tuneloop/tiny-llama", "tuneloop/small-qwen3"}
VLMS = {"Qwen/Qwen3.5-4B", "Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-27B", "Qwen/Qwen3.6-27B"}

SEED_FAMILY_LINES = [
    "• Alibaba Qwen 2.5 / Qwen 3 / Qwen 3.5 (VLM) / Qwen 3.6 (VLM)",
    "• DeepSeek R1 Distill",
    "• Meta Llama 3.1 / 3.2 / 3.3",
    "• OpenAI GPT-OSS",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(autouse=True)
def _no_env_catalog(monkeypatch):
    monkeypatch.delenv("TUNELOOP_CATALOG", raising=False)


def _seed(catalog: Catalog) -> list[ModelEntry]:
    return [m for m in catalog.models.values() if not m.builtin]


# --- contents -----------------------------------------------------------------------------------


def test_counts(catalog):
    assert len(catalog.models) == 29
    assert {m.id for m in _seed(catalog)} == SEED_MODELS
    assert {m.id for m in catalog.models.values() if m.builtin} == BUILTINS


def test_ten_seed_families(catalog):
    seed_families = {m.family for m in _seed(catalog)}
    assert len(seed_families) == 10
    assert catalog.families()[:10] == [
        "Qwen 2.5", "Qwen 3", "Qwen 3.5 (VLM)", "Qwen 3.6 (VLM)", "R1 Distill (Llama)",
        "R1 Distill (Qwen)", "Llama 3.1 Instruct", "Llama 3.2 Instruct", "Llama 3.3 Instruct", "GPT-OSS",
    ]
    assert "tuneloop built-in" in catalog.families()
    assert len(catalog.families()) == len(set(catalog.families()))


def test_keys_are_hugging_face_ids(catalog):
    for m in _seed(catalog):
        assert m.hf_id == m.id
        assert "/" in m.id


def test_vlms_have_no_dpo(catalog):
    for m in catalog.models.values():
        if m.modality == "vision-language":
            assert m.id in VLMS
            assert list(m.techniques) == ["sft", "rlaif", "rlvr"]
        else:
            assert m.id not in VLMS
            assert set(m.techniques) == set(TECHNIQUES)
    assert {m.id for m in catalog.models.values() if m.modality == "vision-language"} == VLMS


def test_both_training_types_everywhere(catalog):
    for m in catalog.models.values():
        for t in m.techniques.values():
            assert t.training_types == ("lora", "full-rank"), (m.id, t.name)


def test_meta_models_are_gated(catalog):
    for m in catalog.models.values():
        assert m.gated == (m.provider == "Meta"), m.id
    assert sum(m.gated for m in catalog.models.values()) == 4


def test_builtins(catalog):
    for mid in BUILTINS:
        m = catalog.models[mid]
        assert m.builtin and m.hf_id is None
        assert m.family == "tuneloop built-in" and m.provider == "tuneloop"
        assert set(m.techniques) == set(TECHNIQUES)
    tiny = catalog.models["tuneloop/tiny-qwen3"]
    assert tiny.chat_template == "chatml"
    assert tiny.default
    assert tiny.techniques["sft"].hyperparameters["learning_rate"] == 2e-3
    assert tiny.techniques["sft"].hyperparameters["learning_rate_full"] == 3e-3
    assert tiny.techniques["sft"].hyperparameters["max_epochs"] == 80
    assert tiny.techniques["sft"].hyperparameters["dataset_max_len"] == 256


def test_default_model(catalog):
    assert catalog.default_model().id == "tuneloop/tiny-qwen3"
    assert [m.id for m in catalog.models.values() if m.default] == ["tuneloop/tiny-qwen3"]


def test_model_fields(catalog):
    templates = {"chatml", "llama3", "deepseek-r1", "harmony"}
    for m in catalog.models.values():
        assert m.parameters > 0
        assert m.chat_template in templates
        assert m.architecture
        assert m.lora_target_modules
        assert m.modality in {"text", "vision-language"}
    assert catalog.get("openai/gpt-oss-20b").architecture == "gpt_oss"
    assert catalog.get("openai/gpt-oss-20b").chat_template == "harmony"
    assert "gate_proj" not in catalog.get("openai/gpt-oss-120b").lora_target_modules
    assert catalog.get("meta-llama/Llama-3.1-8B-Instruct").chat_template == "llama3"
    assert catalog.get("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").chat_template == "deepseek-r1"
    assert catalog.get("Qwen/Qwen3-8B").architecture == "qwen3"
    assert 20e9 < catalog.get("openai/gpt-oss-20b").parameters < 22e9


def test_dataset_schemas(catalog):
    m = catalog.get("Qwen/Qwen3-0.6B")
    assert m.techniques["sft"].dataset_format == "prompt-completion"
    assert m.techniques["sft"].required == ("prompt", "completion")
    assert m.techniques["dpo"].dataset_format == "preference"
    assert m.techniques["dpo"].required == ("prompt", "chosen", "rejected")
    for t in ("rlvr", "rlaif"):
        entry = m.techniques[t]
        assert entry.dataset_format == "prompt-reward"
        assert entry.required == ("prompt", "reward_model")
        assert entry.types == {"prompt": "array", "reward_model": "string"}
        assert entry.dataset_schema == {"required": ["prompt", "reward_model"],
                                        "types": {"prompt": "array", "reward_model": "string"}}


def test_rl_hyperparameters(catalog):
    for m in catalog.models.values():
        for name, t in m.techniques.items():
            hp = t.hyperparameters
            for key in ("learning_rate", "learning_rate_full", "max_epochs", "global_batch_size",
                        "lora_rank", "lora_alpha", "dataset_max_len"):
                assert key in hp, (m.id, name, key)
            if name in ("rlvr", "rlaif"):
                for key in ("max_prompt_length", "max_response_length", "num_generations",
                            "temperature", "kl_loss_coef"):
                    assert key in hp, (m.id, name, key)


# --- lookups ------------------------------------------------------------------------------------


def test_get_by_key_hf_id_and_case(catalog):
    assert catalog.get("Qwen/Qwen3-0.6B").id == "Qwen/Qwen3-0.6B"
    assert catalog.get("qwen/qwen3-0.6b").id == "Qwen/Qwen3-0.6B"
    assert catalog.get("META-LLAMA/llama-3.1-8b-instruct").id == "meta-llama/Llama-3.1-8B-Instruct"
    assert catalog.get("TuneLoop/Tiny-Qwen3").id == "tuneloop/tiny-qwen3"
    assert catalog.get("my-custom-model-7b") is None
    assert catalog.get("") is None


def test_get_by_hf_id_when_key_differs():
    data = json.loads(CATALOG_JSON.read_text())
    entry = data["models"].pop("Qwen/Qwen3-0.6B")
    data["models"]["huggingface-reasoning-qwen3-06b"] = entry
    from tuneloop.catalog import parse_catalog

    cat = parse_catalog(data)
    assert cat.get("qwen/QWEN3-0.6b").id == "huggingface-reasoning-qwen3-06b"


def test_resolve_ok(catalog):
    assert catalog.resolve("qwen/qwen3-4b", "sft", "lora").id == "Qwen/Qwen3-4B"
    assert catalog.resolve("Qwen/Qwen3.5-9B", "RLVR", "full-rank").id == "Qwen/Qwen3.5-9B"
    assert catalog.resolve("tuneloop/tiny-qwen3", "dpo").id == "tuneloop/tiny-qwen3"


# --- errors -------------------------------------------------------------------------------------


def test_unknown_model_message(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("my-custom-model-7b", "sft", "lora")
    err = exc.value
    assert isinstance(err, ValidationError)
    assert err.message == 'Model "my-custom-model-7b" is not yet supported for managed customization.'
    assert err.details[0] == "Supported model families:"
    assert err.details[1:5] == SEED_FAMILY_LINES
    assert any(line.startswith("• tuneloop") and "tuneloop/tiny-qwen3" in line for line in err.details)
    assert err.hint == ("For custom training workflows, pass a local model folder as --model (outside the "
                        "catalog), or run 'tuneloop models' to list supported models.")
    assert err.param == "model"
    rendered = err.render()
    assert rendered.startswith('❌ Model "my-custom-model-7b" is not yet supported')
    assert "   • Meta Llama 3.1 / 3.2 / 3.3" in rendered


def test_unsupported_technique_message(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("Qwen/Qwen3.5-27B", "dpo", "lora")
    err = exc.value
    assert err.message == 'Technique "dpo" is not supported for model "Qwen/Qwen3.5-27B".'
    assert err.details == ["Supported techniques: sft, rlaif, rlvr"]
    assert "tuneloop models" in err.hint
    assert err.param == "technique"


def test_unsupported_technique_uses_canonical_id(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("qwen/qwen3.6-27b", "DPO")
    assert exc.value.message == 'Technique "dpo" is not supported for model "Qwen/Qwen3.6-27B".'


def test_unsupported_training_type_message():
    data = json.loads(CATALOG_JSON.read_text())
    data["models"]["Qwen/Qwen3-0.6B"]["techniques"]["sft"]["trainingTypes"] = ["lora"]
    from tuneloop.catalog import parse_catalog

    cat = parse_catalog(data)
    with pytest.raises(CatalogError) as exc:
        cat.resolve("Qwen/Qwen3-0.6B", "sft", "full-rank")
    err = exc.value
    assert "Qwen/Qwen3-0.6B" in err.message and '"sft"' in err.message and '"full-rank"' in err.message
    assert err.details == ["Supported training types: lora"]
    assert "tuneloop models" in err.hint
    assert err.param == "training_type"
    assert cat.resolve("Qwen/Qwen3-0.6B", "sft", "lora").id == "Qwen/Qwen3-0.6B"


def test_invalid_technique_name(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("Qwen/Qwen3-0.6B", "ppo", "lora")
    err = exc.value
    assert '"ppo"' in err.message
    for t in TECHNIQUES:
        assert t in err.message
    assert err.param == "technique"
    with pytest.raises(CatalogError):
        normalize_technique("")


def test_invalid_training_type_name(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("Qwen/Qwen3-0.6B", "sft", "qlora")
    err = exc.value
    assert '"qlora"' in err.message
    for t in TRAINING_TYPES:
        assert t in err.message
    assert err.param == "training_type"
    assert normalize_training_type("FULL") == "full-rank"
    assert normalize_training_type("LoRA") == "lora"


def test_model_checked_before_technique(catalog):
    with pytest.raises(CatalogError) as exc:
        catalog.resolve("nope/model", "ppo", "qlora")
    assert exc.value.param == "model"


# --- staleness ----------------------------------------------------------------------------------


def test_staleness(catalog):
    synced = catalog.last_synced
    assert synced == datetime.date(2026, 11, 20)
    assert catalog.staleness_warning(synced) is None
    assert catalog.staleness_warning(synced + datetime.timedelta(days=90)) is None
    warning = catalog.staleness_warning(synced + datetime.timedelta(days=91))
    assert warning is not None
    assert "2026-11-20" in warning and "91 days" in warning


# --- default hyperparameters --------------------------------------------------------------------


def test_default_hyperparameters_lora_vs_full(catalog):
    m = catalog.get("Qwen/Qwen3-8B")
    raw = m.techniques["sft"].hyperparameters
    lora = m.default_hyperparameters("sft", "lora")
    full = m.default_hyperparameters("sft", "full-rank")
    assert lora["learning_rate"] == raw["learning_rate"] == 2e-4
    assert full["learning_rate"] == raw["learning_rate_full"] == 1e-5
    assert "learning_rate_full" not in lora and "learning_rate_full" not in full
    assert lora["lora_rank"] == 16 and lora["lora_alpha"] == 32
    assert not any(k.startswith("lora_") for k in full)
    assert full["max_epochs"] == lora["max_epochs"] == 3
    assert m.default_hyperparameters("sft") == lora
    # returned dicts are copies
    lora["learning_rate"] = 1.0
    assert m.default_hyperparameters("sft", "lora")["learning_rate"] == 2e-4


def test_default_hyperparameters_builtin(catalog):
    tiny = catalog.default_model()
    assert tiny.default_hyperparameters("sft", "lora")["learning_rate"] == 2e-3
    assert tiny.default_hyperparameters("sft", "full-rank")["learning_rate"] == 3e-3
    assert tiny.default_hyperparameters("dpo", "full-rank")["learning_rate"] == 1e-3
    rl = tiny.default_hyperparameters("rlvr", "lora")
    assert rl["learning_rate"] == 2e-4 and rl["max_epochs"] == 1 and rl["global_batch_size"] == 32  # the RL demo task learns with these
    assert "num_generations" in rl


def test_default_hyperparameters_unsupported(catalog):
    with pytest.raises(CatalogError):
        catalog.get("Qwen/Qwen3.5-4B").default_hyperparameters("dpo", "lora")


# --- loading ------------------------------------------------------------------------------------


def test_load_is_cached():
    assert load_catalog() is load_catalog()


def test_env_override(tmp_path, monkeypatch):
    data = json.loads(CATALOG_JSON.read_text())
    data["version"] = "test-override"
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("TUNELOOP_CATALOG", str(path))
    assert load_catalog().version == "test-override"
    assert load_catalog(CATALOG_JSON).version == "2026-11-20"


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(CatalogError):
        load_catalog(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CatalogError):
        load_catalog(bad)


def test_invalid_schema_type_rejected(tmp_path):
    data = json.loads(CATALOG_JSON.read_text())
    data["models"]["Qwen/Qwen3-0.6B"]["techniques"]["sft"]["datasetSchema"]["types"]["prompt"] = "number"
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogError) as exc:
        load_catalog(path)
    assert "Qwen/Qwen3-0.6B" in exc.value.message


def test_import_is_light():
    code = ("import sys, tuneloop.catalog as c; c.load_catalog(); "
            "bad = [m for m in ('torch', 'transformers', 'numpy', 'sqlalchemy') if m in sys.modules]; "
            "print(bad)")
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# --- raw JSON schema sanity ---------------------------------------------------------------------


def test_json_schema_sanity():
    data = json.loads(CATALOG_JSON.read_text())
    assert set(data) >= {"version", "lastSynced", "source", "models"}
    assert data["lastSynced"] == "2026-11-20"
    model_keys = {"family", "provider", "displayName", "huggingFaceId", "techniques", "parameters",
                  "architecture", "chatTemplate", "loraTargetModules", "gated", "modality", "builtin"}
    for mid, m in data["models"].items():
        assert model_keys <= set(m), (mid, model_keys - set(m))
        assert isinstance(m["parameters"], int) and m["parameters"] > 0
        assert isinstance(m["gated"], bool) and isinstance(m["builtin"], bool)
        assert m["huggingFaceId"] is None if m["builtin"] else m["huggingFaceId"] == mid
        assert isinstance(m["loraTargetModules"], list) and m["loraTargetModules"]
        assert m.get("default", False) is (mid == "tuneloop/tiny-qwen3")
        for t, entry in m["techniques"].items():
            assert t in TECHNIQUES
            assert {"trainingTypes", "datasetFormat", "datasetSchema", "hyperparameters"} <= set(entry)
            assert entry["trainingTypes"] and set(entry["trainingTypes"]) <= set(TRAINING_TYPES)
            schema = entry["datasetSchema"]
            assert schema["required"]
            assert set(schema["required"]) <= set(schema["types"])
            assert set(schema["types"].values()) <= {"string", "array"}
            hp = entry["hyperparameters"]
            assert 0 < hp["learning_rate"] < 1 and 0 < hp["learning_rate_full"] < 1
            assert isinstance(hp["max_epochs"], int) and isinstance(hp["global_batch_size"], int)
