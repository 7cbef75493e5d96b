"""The hyperparameter registry is the one declaration: every knob has a flag, help, bounds and a
default; the CLI's options and the SDK's checks come from it; defaults live in one table that the
catalog's per-model values override. Pure."""

from __future__ import annotations

import pytest

from tuneloop import spec as spec_mod
from tuneloop.catalog import TECHNIQUES, TRAINING_TYPES, load_catalog
from tuneloop.errors import ValidationError
from tuneloop.spec import DEFAULTS, HYPERPARAMETERS, JobSpec, TuneRequest, check_hyperparameters, \
    resolve_hyperparameters
from tuneloop.training.plan import DataStats, Hardware, ModelShape, make_plan

CPU = Hardware("cpu", 1, 16.0, False, 2)
TINY = ModelShape(1_300_000, 4, 128, 4096)
PLANNED = {"max_steps", "save_steps"}   # no value of their own: the planner derives them from epochs


@pytest.mark.parametrize("name", list(HYPERPARAMETERS))
def test_every_knob_has_a_flag_help_bounds_and_a_default(name):
    hp = HYPERPARAMETERS[name]
    assert hp.name == name and hp.cli_flag.startswith("--") and hp.help
    assert hp.choices or (hp.min is not None and hp.max is not None and hp.min < hp.max)   # str knobs: choices
    for technique in TECHNIQUES:
        for training_type in TRAINING_TYPES:
            if not hp.applies(technique, training_type):
                continue
            value = hp.default_for(technique, training_type)
            if name in PLANNED:
                assert value is None
            else:
                assert value is not None and hp.check(value) == value, (technique, training_type)


def test_today_s_flags_are_kept():
    flags = {n: hp.cli_flag for n, hp in HYPERPARAMETERS.items()}
    assert flags["max_epochs"] == "--epochs" and flags["kl_loss_coef"] == "--kl-coef"
    assert flags["dataset_max_len"] == "--max-seq-length" and flags["global_batch_size"] == "--batch-size"
    assert len(set(flags.values())) == len(flags)


def test_the_cli_options_are_the_registry_s():
    import typer

    from tuneloop.cli.main import app

    command = typer.main.get_command(app).commands["tune"]
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    for name, hp in HYPERPARAMETERS.items():
        opt = options[name]
        assert opt.opts == [hp.cli_flag] and hp.help in opt.help and opt.default is None
        assert opt.type_descriptor.annotation is hp.type
    knobs = [p for p in command.params if p.name in HYPERPARAMETERS]
    assert [p.name for p in knobs] == list(HYPERPARAMETERS)   # registry order


def test_the_cli_passes_flags_by_registry_name(monkeypatch):
    from typer.testing import CliRunner

    from tuneloop.cli import tune as tune_cli
    from tuneloop.cli.main import app

    seen = {}

    class Stop(Exception):
        pass

    class FakeService:
        def prepare(self, req, dry_run=False):
            seen["req"] = req
            raise Stop

    monkeypatch.setattr(tune_cli, "service", lambda: FakeService())
    r = CliRunner().invoke(app, ["tune", "--technique", "rlvr", "--dataset", "d.jsonl", "--kl-coef", "0",
                                 "--epochs", "2", "--seed", "7"])
    assert isinstance(r.exception, Stop), r.output
    hp = {k: v for k, v in seen["req"].hyperparameters.items() if v is not None}
    assert hp == {"kl_loss_coef": 0.0, "max_epochs": 2, "seed": 7}


def test_a_default_lives_in_one_table(monkeypatch):
    def plan():
        return make_plan(technique="sft", training_type="lora", shape=TINY, data=DataStats(16, 30, 40), hw=CPU,
                         defaults={}, overrides={})

    assert plan().lora_rank == 16 and plan().seed == 42 and plan().warmup_steps == 0
    monkeypatch.setitem(DEFAULTS["sft"], "lora", {**DEFAULTS["sft"]["lora"], "lora_rank": 4, "seed": 9})
    assert plan().lora_rank == 4 and plan().seed == 9


def test_the_generic_table_has_every_applicable_knob():
    for technique in TECHNIQUES:
        for training_type in TRAINING_TYPES:
            table = DEFAULTS[technique][training_type]
            expected = {n for n, hp in HYPERPARAMETERS.items() if hp.applies(technique, training_type)} - PLANNED
            assert set(table) == expected, (technique, training_type)
    assert DEFAULTS["sft"]["full-rank"]["learning_rate"] == 1e-5 and "lora_rank" not in DEFAULTS["sft"]["full-rank"]


def test_the_catalog_overrides_the_generic_default_and_the_user_wins():
    entry = load_catalog().get("tuneloop/tiny-qwen3")
    model = entry.default_hyperparameters("sft", "lora")
    assert set(model) <= set(HYPERPARAMETERS)   # the catalog speaks the registry's names
    hp = resolve_hyperparameters("sft", "lora", model=model)
    assert hp["lora_rank"] == 64 != DEFAULTS["sft"]["lora"]["lora_rank"]   # model > generic
    assert hp["seed"] == 42                                                 # not in the catalog: generic
    assert resolve_hyperparameters("sft", "lora", model=model, user={"lora_rank": 8})["lora_rank"] == 8


def test_every_catalog_default_is_a_registry_knob():
    for entry in load_catalog().models.values():
        for technique, t in entry.techniques.items():
            for training_type in t.training_types:
                hp = entry.default_hyperparameters(technique, training_type)
                assert check_hyperparameters(hp, training_type, technique) == hp


@pytest.mark.parametrize("kwargs", [{"hyperparameters": {"lr": 1}}, {"hyperparameters": {"temperature": 0.5}},
                                    {"hyperparameters": {"lora_rank": 8}, "training_type": "full-rank"}])
def test_the_sdk_rejects_a_knob_with_the_cli_s_message(kwargs):
    from tuneloop import SFTTrainer

    with pytest.raises(ValidationError) as sdk:
        SFTTrainer(**kwargs)
    with pytest.raises(ValidationError) as service:   # what prepare() raises for the CLI and the API
        check_hyperparameters(kwargs["hyperparameters"], kwargs.get("training_type", "lora"), "sft")
    assert str(sdk.value) == str(service.value) and sdk.value.hint == service.value.hint


def test_the_sdk_takes_registry_knobs_as_keywords():
    from tuneloop import RLVRTrainer, SFTTrainer

    assert SFTTrainer(learning_rate=1e-3, hyperparameters={"max_epochs": 2}).hyperparameters == \
        {"max_epochs": 2, "learning_rate": 1e-3}
    assert "kl_loss_coef" in RLVRTrainer.hyperparameter_names()
    assert "kl_loss_coef" not in SFTTrainer.hyperparameter_names()


def test_request_and_spec_share_one_declaration_and_the_spec_is_frozen():
    import dataclasses

    shared = {f.name for f in dataclasses.fields(spec_mod._JobFields)}
    req_only = {f.name for f in dataclasses.fields(TuneRequest)} - shared
    spec_only = {f.name for f in dataclasses.fields(JobSpec)} - shared
    assert req_only == {"model", "project", "validation_split", "skip_reward_validation"}
    assert spec_only == {"model", "project", "model_source", "reward_base_dir"}
    req = TuneRequest(technique="sft", dataset="d.jsonl", hyperparameters={"seed": 1}, take=5)
    spec = JobSpec.from_request(req, project="p", model="m", model_source="builtin")
    assert (spec.take, spec.hyperparameters, spec.training_type) == (5, {"seed": 1}, "lora")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.judge_model = "x"
    old = spec.to_dict() | {"dataset_sha256": "abc", "a_field_from_the_future": 1}
    assert JobSpec.from_dict(old) == spec


def test_one_function_writes_the_spec_file(tmp_path):
    import json

    spec = JobSpec(project="p", technique="sft", model="m", model_source="builtin", dataset="d.jsonl")
    record = spec_mod.spec_record(spec, {"dataset_rows": 3})
    text = spec_mod.spec_file(record)
    assert json.loads(text) == record and record["dataset_rows"] == 3 and text.endswith("}\n")
    path = spec_mod.write_spec_file(tmp_path / "tuneloop_spec.json", record)
    assert path.read_text() == text and [p.name for p in tmp_path.iterdir()] == ["tuneloop_spec.json"]
