import pytest

from tuneloop.errors import ValidationError
from tuneloop.spec import JobSpec, check_hyperparameters
from tuneloop.training.plan import DataStats, Hardware, ModelShape, make_plan

CPU = Hardware("cpu", 1, 16.0, False, 2)
H100 = Hardware("cuda", 1, 80.0, True, 16, "H100")
TINY = ModelShape(1_300_000, 4, 128, 4096)
DEFAULTS = {"learning_rate": 1e-2, "max_epochs": 3, "global_batch_size": 8, "lora_rank": 16, "lora_alpha": 32,
            "dataset_max_len": 256}


def test_hyperparameters_are_checked_by_name():
    assert check_hyperparameters({"max_epochs": 3.0, "learning_rate": 1e-4, "lora_rank": None}, "lora") == \
        {"max_epochs": 3, "learning_rate": 1e-4}
    with pytest.raises(ValidationError, match="max_epochs must be an integer"):
        check_hyperparameters({"max_epochs": 1.5}, "lora")
    with pytest.raises(ValidationError, match=r"learning_rate=5.0 is out of range"):
        check_hyperparameters({"learning_rate": 5.0}, "lora")
    with pytest.raises(ValidationError, match="--lora-rank only applies when --training-type lora"):
        check_hyperparameters({"lora_rank": 8}, "full-rank")
    with pytest.raises(ValidationError, match="Unknown hyperparameter 'lr'"):
        check_hyperparameters({"lr": 1}, "lora")


def test_spec_round_trips_through_json():
    import json

    spec = JobSpec(project="p", technique="sft", training_type="lora", model="m", model_source="builtin",
                   dataset="d.jsonl", hyperparameters={"max_epochs": 2})
    assert JobSpec.from_dict(json.loads(spec.to_json())) == spec
    assert spec.group == "p-tune-models"


def test_cpu_plan_is_fp32_without_checkpointing():
    plan = make_plan(technique="sft", training_type="lora", shape=TINY, data=DataStats(16, 30, 40), hw=CPU,
                     defaults=DEFAULTS, overrides={})
    assert (plan.device, plan.precision, plan.gradient_checkpointing) == ("cpu", "fp32", False)
    assert plan.per_device_batch * plan.grad_accum == 8 and plan.steps_per_epoch == 2 and plan.total_steps == 6
    assert plan.lora_rank == 16 and plan.threads == 2 and plan.est_peak_memory_gb > 0


def test_user_overrides_win_and_batch_is_laid_out():
    plan = make_plan(technique="sft", training_type="full-rank", shape=TINY, data=DataStats(100, 30, 40), hw=CPU,
                     defaults=DEFAULTS, overrides={"global_batch_size": 32, "max_steps": 7, "learning_rate": 1e-4})
    assert plan.global_batch == 32 and plan.per_device_batch == 8 and plan.grad_accum == 4
    assert plan.total_steps == 7 and plan.learning_rate == 1e-4 and plan.lora_rank is None


def test_gpu_plan_uses_bf16_and_checkpoints_only_when_needed():
    big = ModelShape(8_000_000_000, 36, 4096, 152_000)
    plan = make_plan(technique="sft", training_type="lora", shape=big, data=DataStats(1000, 900, 2048), hw=H100,
                     defaults={**DEFAULTS, "dataset_max_len": 2048, "global_batch_size": 32}, overrides={})
    assert plan.precision == "bf16" and plan.est_peak_memory_gb <= 80
    small = make_plan(technique="sft", training_type="lora", shape=TINY, data=DataStats(1000, 30, 40), hw=H100,
                      defaults=DEFAULTS, overrides={})
    assert not small.gradient_checkpointing


def test_impossible_job_says_what_to_change():
    huge = ModelShape(70_000_000_000, 80, 8192, 128_000)
    with pytest.raises(ValidationError, match="needs about") as e:
        make_plan(technique="sft", training_type="full-rank", shape=huge, data=DataStats(10, 900, 2048), hw=CPU,
                  defaults=DEFAULTS, overrides={})
    assert "--training-type lora" in e.value.hint


def test_cpu_micro_batch_follows_a_token_budget_and_mixed_lengths_are_grouped():
    short = make_plan(technique="sft", training_type="lora", shape=TINY, data=DataStats(256, 30, 40), hw=CPU,
                      defaults=DEFAULTS, overrides={})
    long = make_plan(technique="sft", training_type="lora", shape=TINY, data=DataStats(256, 100, 250), hw=CPU,
                     defaults=DEFAULTS, overrides={})
    assert short.per_device_batch == 8 and not short.group_by_length
    assert long.per_device_batch == 2 and long.grad_accum == 4 and long.group_by_length
    dpo = make_plan(technique="dpo", training_type="lora", shape=TINY, data=DataStats(256, 100, 250), hw=CPU,
                    defaults=DEFAULTS, overrides={})
    assert dpo.per_device_batch == 1 and not dpo.group_by_length  # two sequences a sample
