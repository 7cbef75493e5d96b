"""The RL planner and RL hyperparameters: whole groups per device, lengths from the data, KL and
threads. Pure."""

from __future__ import annotations

import pytest

from tuneloop.errors import ValidationError
from tuneloop.spec import check_hyperparameters
from tuneloop.training.plan import DataStats, Hardware, ModelShape, make_plan

TINY = ModelShape(parameters=1_312_128, layers=4, hidden=128, vocab=4096, heads=4)
SEVEN_B = ModelShape(parameters=7_620_000_000, layers=28, hidden=3584, vocab=152_064, heads=28)
CPU = Hardware("cpu", 1, 16.0, False, 2, "cpu")
GPUS = Hardware("cuda", 2, 80.0, True, 16, "H100")
DEFAULTS = {"learning_rate": 2e-4, "max_epochs": 1, "global_batch_size": 32, "lora_rank": 16, "lora_alpha": 32,
            "max_prompt_length": 128, "max_response_length": 128, "num_generations": 8, "temperature": 1.0,
            "kl_loss_coef": 0.001}


def plan(shape=TINY, hw=CPU, data=DataStats(96, 20.0, 30), training_type="lora", **overrides):
    return make_plan(technique="rlvr", training_type=training_type, shape=shape, data=data, hw=hw,
                     defaults=DEFAULTS, overrides=overrides)


@pytest.mark.parametrize("gens, batch", [(8, 32), (4, 32), (6, 32), (3, 10), (16, 8)])
def test_per_device_batch_holds_whole_groups(gens, batch):
    p = plan(num_generations=gens, global_batch_size=batch)
    assert p.per_device_batch % gens == 0 and p.global_batch % gens == 0
    assert p.global_batch == p.per_device_batch * p.grad_accum * p.world_size >= batch
    assert p.num_generations == gens
    assert p.steps_per_epoch == -(-96 // (p.global_batch // gens))  # prompts per step = batch / generations
    if p.global_batch != batch:
        assert any("rounded" in n for n in p.notes)


def test_gpu_layout_and_memory():
    p = plan(shape=SEVEN_B, hw=GPUS, global_batch_size=64, data=DataStats(1000, 200.0, 400))
    assert p.world_size == 2 and p.precision == "bf16" and p.threads == 0
    assert p.per_device_batch % 8 == 0 and p.global_batch == 64
    lora, full = p.est_peak_memory_gb, plan(shape=SEVEN_B, hw=Hardware("cuda", 1, 400.0, True, 16),
                                            training_type="full-rank").est_peak_memory_gb
    assert full > lora  # full-rank keeps states and a frozen reference copy


def test_lengths_come_from_the_data_unless_given():
    p = plan(data=DataStats(96, 20.0, 30, reference_tokens=3, prompt_tokens=30))
    assert p.max_prompt_length == 30 and p.max_response_length == 4 * 3 + 16
    assert any("4 x the longest reference answer" in n for n in p.notes)
    assert p.max_length == 30 + 28
    given = plan(data=DataStats(96, 20.0, 30, reference_tokens=3), max_response_length=64)
    assert given.max_response_length == 64
    assert plan(data=DataStats(96, 20.0, 500, prompt_tokens=500), max_prompt_length=128).max_prompt_length == 128
    assert plan().max_response_length == 128  # no references: the default


def test_the_prompt_length_never_cuts_a_prompt_that_fits_the_context():
    # measured prompts (rendered through the template) set the length, whatever the estimate says
    assert plan(data=DataStats(96, 20.0, 18, prompt_tokens=37)).max_prompt_length == 37
    # not measured (no tokenizer here): the estimate with room for a template, and said
    unmeasured = plan(data=DataStats(96, 20.0, 18))
    assert unmeasured.max_prompt_length == 18 + 64
    assert any("without the model's tokenizer" in n for n in unmeasured.notes)
    # longer than the default but within the context: raised, and said
    long_prompts = DataStats(96, 20.0, 18, prompt_tokens=500)
    long = plan(shape=ModelShape(1_312_128, 4, 128, 4096, 4, context=2048), data=long_prompts)
    assert long.max_prompt_length == 500 and any("so no prompt is cut" in n for n in long.notes)
    # longer than the context leaves for the response: cut to what it leaves, and said
    tight = plan(shape=ModelShape(1_312_128, 4, 128, 4096, 4, context=512), data=long_prompts)
    assert tight.max_prompt_length == 512 - 128 and any("cut from the front" in n for n in tight.notes)
    # the user's own cut stands
    assert plan(data=long_prompts, max_prompt_length=64).max_prompt_length == 64


def test_kl_clip_temperature_and_threads():
    p = plan(kl_loss_coef=0.0, clip_ratio=0.3, temperature=0.7)
    assert (p.kl_coef, p.clip_ratio, p.temperature) == (0.0, 0.3, 0.7)
    assert any("no reference model" in n for n in p.notes)
    assert plan().threads == 2  # every core (bench/RESULTS.md "RL (GRPO) step throughput": faster than one)
    assert plan(shape=ModelShape(25_000_000, 8, 512, 4096)).threads == 2
    assert plan().reward_failure_threshold == 0.2 and plan(reward_timeout=3.0).reward_timeout_s == 3.0


def test_rl_hyperparameters_are_checked_by_name():
    assert check_hyperparameters({"num_generations": 4, "kl_loss_coef": 0.0}, "lora", "rlvr") == \
        {"num_generations": 4, "kl_loss_coef": 0.0}
    with pytest.raises(ValidationError, match="num_generations=1 is out of range"):
        check_hyperparameters({"num_generations": 1}, "lora", "rlvr")
    with pytest.raises(ValidationError, match="only applies to rlvr and rlaif jobs"):
        check_hyperparameters({"temperature": 0.5}, "lora", "sft")
    with pytest.raises(ValidationError, match="temperature must be a number"):
        check_hyperparameters({"temperature": "hot"}, "lora", "rlaif")
    assert check_hyperparameters({"temperature": 0.5}, "lora") == {"temperature": 0.5}  # technique unknown: no check
