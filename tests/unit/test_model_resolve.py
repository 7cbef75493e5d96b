"""Every kind of model reference through the one resolver (tuneloop.models.resolve): the catalog's
default, catalog and built-in ids, model and adapter folders, tuneloop outputs, GROUP@vN, deployed
names, techniques and job names (through a fake of the store's lookups), with each caller's checks
and error messages. Folders hold safetensors headers only: resolution reads names, never tensors."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tuneloop.errors import CatalogError, ValidationError
from tuneloop.models.resolve import JobOutput, ModelLookups, resolve
from tuneloop.models.shape import count_safetensors_parameters, model_shape


def _safetensors(path: Path, tensors: dict[str, list[int]]) -> None:
    header = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
                         for name, shape in tensors.items()}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def _model(folder: Path, manifest: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3", "num_hidden_layers": 2, "hidden_size": 8,
                                                    "intermediate_size": 16, "num_attention_heads": 2,
                                                    "vocab_size": 32}))
    _safetensors(folder / "model.safetensors", {"embed.weight": [32, 8], "norm.weight": [8]})
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _adapter(folder: Path, base: str | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base} if base else {}))
    _safetensors(folder / "adapter_model.safetensors", {"q_proj.lora_A.weight": [4, 8]})
    return folder


class FakeLookups:
    """The store's side, as dicts; records what the resolver asked."""

    def __init__(self, jobs=(), packages=None, deployed=None):
        self.jobs = {j.id: j for j in jobs}
        self.packages, self.deployed_names = packages or {}, deployed or {}
        self.asked: list[tuple] = []

    def job_output(self, ref, project):
        self.asked.append(("job", ref, project))
        if ref in ("sft", "dpo", "rlvr", "rlaif"):
            return next((j for j in reversed(list(self.jobs.values())) if f"-tune-{ref}-" in j.id), None)
        return self.jobs.get(ref)

    def package_version(self, group, version):
        self.asked.append(("package", group, version))
        return self.packages.get((group, version))

    def deployed(self, project, name):
        self.asked.append(("deployed", project, name))
        return self.deployed_names.get(name)

    def lookups(self) -> ModelLookups:
        return ModelLookups(self.job_output, self.package_version, self.deployed)


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


def test_nothing_is_the_catalogs_default_and_catalog_ids_are_hub_ids(models_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    ref = resolve(None, technique="sft", models_dir=models_dir)
    assert ref.via == "default" and ref.entry is not None and ref.entry.default and ref.id == ref.entry.id
    qwen = resolve("qwen/qwen3-0.6b", technique="sft", models_dir=models_dir)   # case-insensitive
    assert (qwen.id, qwen.kind, qwen.base, qwen.adapter, qwen.via) == ("Qwen/Qwen3-0.6B", "catalog", "Qwen/Qwen3-0.6B",
                                                                       None, "catalog")
    assert qwen.lora_targets and "q_proj" in qwen.lora_targets
    with pytest.raises(ValidationError, match="not in the local Hugging Face cache") as e:  # the Hub is off here
        qwen.load_path()
    assert "hf download Qwen/Qwen3-0.6B" in e.value.hint and "HF_HUB_OFFLINE=1" in e.value.hint
    assert resolve("Qwen/Qwen3-0.6B", use="eval", models_dir=models_dir).name == "Qwen/Qwen3-0.6B"


def test_a_builtin_resolves_to_its_folder_without_building_it(models_dir):
    ref = resolve("tuneloop/tiny-qwen3", technique="sft", models_dir=models_dir)
    assert ref.kind == "builtin" and ref.builtin and ref.base == str(models_dir / "tuneloop--tiny-qwen3")
    assert not models_dir.exists()  # load_path() / local_folder() build it, resolution does not


def test_tune_checks_the_technique_and_names_unknown_models_with_the_catalogs_error(models_dir):
    with pytest.raises(CatalogError, match="not yet supported for managed customization"):
        resolve("acme/unknown-7b", technique="sft", models_dir=models_dir)
    with pytest.raises(CatalogError, match="Unknown technique"):
        resolve("tuneloop/tiny-qwen3", technique="ppo", models_dir=models_dir)


def test_a_model_folder(tmp_path, models_dir):
    folder = _model(tmp_path / "my-model")
    ref = resolve(str(folder), technique="sft", models_dir=models_dir)
    assert (ref.id, ref.kind, ref.base, ref.entry, ref.via) == (str(folder.resolve()), "local", str(folder.resolve()),
                                                                None, "folder")
    assert "outside the catalog" in ref.notes[0] and ref.local_folder() == folder.resolve()
    assert resolve(str(folder), use="eval", models_dir=models_dir).notes == ()   # notes are tune's
    assert count_safetensors_parameters(folder) == 32 * 8 + 8
    assert model_shape(folder, 0).parameters == 32 * 8 + 8


def test_a_tuneloop_full_rank_output_continues_with_its_bases_entry_in_rl(tmp_path, models_dir):
    folder = _model(tmp_path / "out", manifest={"base_model": "tuneloop/tiny-qwen3"})
    rl = resolve(str(folder), technique="rlvr", models_dir=models_dir)
    assert rl.entry.id == "tuneloop/tiny-qwen3" and rl.kind == "local"
    assert "a tuneloop/tiny-qwen3 fine-tune" in rl.notes[0]
    assert resolve(str(folder), technique="sft", models_dir=models_dir).entry is None   # SFT: generic defaults


def test_folders_that_are_neither_or_hold_pickles(tmp_path, models_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValidationError, match="has no config.json"):
        resolve(str(empty), technique="sft", models_dir=models_dir)
    with pytest.raises(ValidationError, match="neither a model folder"):
        resolve(str(empty), use="eval", models_dir=models_dir)
    with pytest.raises(ValidationError, match="judge folder .* has neither"):
        resolve(str(empty), use="judge", models_dir=models_dir)
    assert resolve(str(empty), use="serve", models_dir=models_dir).via == "folder"   # the server checks it
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    for use in ("tune", "eval", "judge"):
        with pytest.raises(ValidationError, match="only pickled weights"):
            resolve(str(pickled), use=use, technique="sft", models_dir=models_dir)


def test_adapter_folders(tmp_path, models_dir):
    base = _model(tmp_path / "base")
    adapter = _adapter(tmp_path / "adapter", str(base))
    ref = resolve(str(adapter), technique="rlvr", models_dir=models_dir)
    assert (ref.kind, ref.base, ref.adapter, ref.id) == ("adapter", str(base.resolve()), str(adapter.resolve()),
                                                         str(adapter.resolve()))
    assert "Continuing from the adapter" in ref.notes[0]
    with pytest.raises(ValidationError, match="available for rlvr and rlaif"):
        resolve(str(adapter), technique="sft", models_dir=models_dir)
    assert resolve(str(adapter), use="eval", models_dir=models_dir).adapter == str(adapter.resolve())

    elsewhere = _adapter(tmp_path / "elsewhere", "/nowhere/base")   # a Hub id for eval; tune needs it here
    assert resolve(str(elsewhere), use="eval", models_dir=models_dir).base == "/nowhere/base"
    with pytest.raises(ValidationError, match="is not on this machine"):
        resolve(str(elsewhere), technique="rlvr", models_dir=models_dir)

    on_builtin = _adapter(tmp_path / "on-builtin", "tuneloop/tiny-qwen3")   # the base is the built-in's folder
    ref = resolve(str(on_builtin), use="eval", models_dir=models_dir)
    assert ref.builtin and ref.entry.id == "tuneloop/tiny-qwen3"
    assert ref.base == str(models_dir / "tuneloop--tiny-qwen3")

    nameless = _adapter(tmp_path / "nameless", None)
    with pytest.raises(ValidationError, match="does not name its base model"):
        resolve(str(nameless), use="eval", models_dir=models_dir)


def test_registered_versions_deployed_names_techniques_and_jobs(tmp_path, models_dir):
    adapter = _adapter(tmp_path / "adapter", str(_model(tmp_path / "base")))
    full = _model(tmp_path / "full")
    fake = FakeLookups(
        jobs=[JobOutput("p-tune-sft-20260101-000000", "completed", str(adapter)),
              JobOutput("p-tune-dpo-20260101-000000", "failed", None)],
        packages={("p-tune-models", "1"): str(full)}, deployed={"tuned": str(adapter)})
    lookups = fake.lookups()

    ref = resolve("p-tune-models@v1", use="eval", lookups=lookups, models_dir=models_dir)
    assert (ref.via, ref.name, ref.base, ref.adapter) == ("package", "p-tune-models@v1", str(full.resolve()), None)
    with pytest.raises(ValidationError, match="No registered version 'p-tune-models@v2'"):
        resolve("p-tune-models@v2", use="eval", lookups=lookups, models_dir=models_dir)

    ref = resolve("tuned", use="eval", project="p", lookups=lookups, models_dir=models_dir)
    assert (ref.via, ref.adapter) == ("deployed", str(adapter.resolve())) and ("deployed", "p", "tuned") in fake.asked

    ref = resolve("SFT", use="eval", project="p", lookups=lookups, models_dir=models_dir)   # the latest sft job
    assert (ref.via, ref.name, ref.adapter) == ("job", "p-tune-sft-20260101-000000", str(adapter.resolve()))
    assert ("job", "sft", "p") in fake.asked
    ref = resolve("p-tune-sft-20260101-000000", technique="rlvr", lookups=lookups, models_dir=models_dir)
    assert ref.kind == "adapter" and ref.id == str(adapter.resolve())   # tune continues from the job's output

    with pytest.raises(ValidationError, match="is failed; only a completed job's output can be evaluated"):
        resolve("dpo", use="eval", lookups=lookups, models_dir=models_dir)
    with pytest.raises(ValidationError, match=r"has no output to continue from \(it is failed\)"):
        resolve("p-tune-dpo-20260101-000000", technique="rlvr", lookups=lookups, models_dir=models_dir)


def test_unknown_references_name_what_each_caller_accepts(models_dir):
    lookups = FakeLookups().lookups()
    with pytest.raises(ValidationError, match="is not a folder, a job, a registered version"):
        resolve("no-such-thing", use="eval", lookups=lookups, models_dir=models_dir)
    with pytest.raises(ValidationError, match="is not a catalog model, a built-in, a model folder or openai:"):
        resolve("no-such-thing", use="judge", models_dir=models_dir)
    with pytest.raises(ValidationError, match="neither in the catalog nor a model folder"):
        resolve("no-such-thing", use="serve", models_dir=models_dir)
    with pytest.raises(CatalogError, match="not yet supported"):   # tune: the catalog's error, after the lookups
        resolve("no-such-thing", technique="sft", lookups=lookups, models_dir=models_dir)
    # without lookups GROUP@vN is not a reference at all
    with pytest.raises(ValidationError, match="is not a folder, a job"):
        resolve("p-tune-models@v1", use="eval", models_dir=models_dir)


def test_the_judge_sees_value_errors(tmp_path, models_dir):
    from tuneloop.rewards.judge import resolve_local_model

    folder = _model(tmp_path / "judge")
    assert resolve_local_model(str(folder), models_dir) == (str(folder.resolve()), None)
    with pytest.raises(ValueError, match="judge 'nope' is not a catalog model"):
        resolve_local_model("nope", models_dir)


def test_resolving_imports_no_torch():
    code = ("import sys; from tuneloop.models.resolve import resolve; resolve('Qwen/Qwen3-0.6B', technique='sft'); "
            "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
