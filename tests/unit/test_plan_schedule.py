"""The planner's epochs, learning rate, time and memory refusal: `.venv/bin/python -m pytest tests/unit/test_plan_schedule.py -q`."""

import pytest

from tuneloop.errors import ValidationError
from tuneloop.training.plan import (DataStats, Hardware, ModelShape, auto_epochs, auto_learning_rate,
                                    cpu_lora_tokens_per_s, make_plan)

CPU = Hardware("cpu", 1, 16.0, False, 2)
SMOL = ModelShape(134_515_008, 30, 576, 49152, 9)
RL_LEN = {"max_response_length": 64}   # RL rows without references: the 1024 default would not fit 16 GiB


def plan(rows: int, *, defaults=None, overrides=None, technique="sft", training_type="lora", shape=SMOL, hw=CPU):
    return make_plan(technique=technique, training_type=training_type, shape=shape, data=DataStats(rows, 30, 40),
                     hw=hw, defaults=defaults or {}, overrides=overrides or {})


def test_epochs_follow_the_dataset_size():
    assert auto_epochs(1) == 25 and auto_epochs(12) == 12           # a dozen rows: many passes
    assert auto_epochs(100) == 3 and auto_epochs(5000) == 3          # the middle: OpenAI's 3
    assert auto_epochs(10_000) == 2 and auto_epochs(100_000) == 1    # large sets: one pass
    sizes = [1, 5, 12, 30, 34, 100, 1000, 8000, 9000, 20_000, 100_000, 10**7]
    epochs = [auto_epochs(n) for n in sizes]
    assert epochs == sorted(epochs, reverse=True) and all(1 <= e <= 25 for e in epochs)
    # example-visits stay near 150 for small sets and never exceed 25k plus one pass for large ones
    assert all(abs(n * e - 150) <= n / 2 for n, e in zip(sizes, epochs) if 6 <= n <= 50)
    assert all(n * e <= max(25_000, n) for n, e in zip(sizes, epochs))


def test_learning_rate_follows_model_size_and_adapter_scale():
    small, big = auto_learning_rate("sft", 135_000_000, 16, 32), auto_learning_rate("sft", 7_000_000_000, 16, 32)
    assert 8e-4 <= small <= 1.2e-3 and big == 2e-4
    assert auto_learning_rate("sft", 70_000_000_000, 16, 32) < big
    assert auto_learning_rate("sft", 135_000_000, 16, 64) == pytest.approx(small / 2, rel=0.01)  # alpha/r 4 vs 2
    assert auto_learning_rate("dpo", 7_000_000_000, 16, 32) == 5e-5


def test_a_model_outside_the_catalog_gets_the_derived_schedule():
    p = plan(12)
    assert p.epochs == 12 and p.total_steps == 24 and p.learning_rate == auto_learning_rate("sft", SMOL.parameters, 16, 32)
    assert any(n.startswith("epochs 12: from 12 rows") for n in p.notes)
    assert plan(100_000).epochs == 1


def test_user_and_catalog_values_win_over_the_derived_ones():
    p = plan(12, overrides={"max_epochs": 2, "learning_rate": 1e-4})
    assert p.epochs == 2 and p.learning_rate == 1e-4 and not any("epochs" in n for n in p.notes)
    catalog = plan(12, defaults={"max_epochs": 80, "learning_rate": 2e-3, "lora_rank": 64, "lora_alpha": 256})
    assert catalog.epochs == 80 and catalog.learning_rate == 2e-3 and catalog.lora_rank == 64
    steps = plan(12, overrides={"max_steps": 5})
    assert steps.total_steps == 5
    full = plan(12, training_type="full-rank")
    assert full.epochs == 12 and full.learning_rate == 1e-5        # full-rank keeps the registry's rate
    rl_catalog = plan(12, technique="rlvr", defaults={"max_epochs": 1, "learning_rate": 2e-4}, overrides=RL_LEN)
    assert rl_catalog.epochs == 1 and rl_catalog.learning_rate == 2e-4
    rl_user = plan(12, technique="rlvr", overrides={**RL_LEN, "max_epochs": 1, "learning_rate": 1e-5})
    assert rl_user.epochs == 1 and rl_user.learning_rate == 1e-5
    assert plan(12, technique="rlvr", training_type="full-rank", overrides=RL_LEN).learning_rate == 1e-6   # the registry's rate


def test_rl_gets_passes_for_its_target_steps_and_a_size_scaled_rate():
    rl = plan(16, technique="rlvr", overrides=RL_LEN)           # 16 prompts, 2 per step (16 completions of 8 generations)
    assert rl.global_batch == 16 and rl.steps_per_epoch == 8 and rl.epochs == 2 and rl.total_steps == 16
    assert rl.learning_rate == auto_learning_rate("rlvr", SMOL.parameters, 16, 32) == pytest.approx(4.86e-4)
    assert auto_learning_rate("rlaif", 7_000_000_000, 16, 32) == 1e-4
    assert rl.kl_coef == 0.0 and any(n.startswith("epochs 2: 8 steps per pass") for n in rl.notes)
    assert plan(1000, technique="rlvr", overrides=RL_LEN).epochs == 1                       # the data already gives the steps
    assert plan(16, technique="rlaif", overrides={**RL_LEN, "max_steps": 5}).total_steps == 5


def test_time_comes_from_the_measured_throughput():
    assert cpu_lora_tokens_per_s(25_700_000, 2) == pytest.approx(524.0)
    assert cpu_lora_tokens_per_s(25_700_000, 4) == pytest.approx(1048.0)
    mid = cpu_lora_tokens_per_s(60_000_000, 2)
    assert cpu_lora_tokens_per_s(134_515_008, 2) < mid < 524.0
    assert cpu_lora_tokens_per_s(7e9, 2) < cpu_lora_tokens_per_s(134_515_008, 2) / 40
    assert cpu_lora_tokens_per_s(1_000, 2) == pytest.approx(4 * 524.0)      # overhead-bound below the table
    table = ((1e7, 1000.0), (1e9, 10.0))                                       # log-log between measured points
    assert cpu_lora_tokens_per_s(1e8, 2, table) == pytest.approx(100.0)
    p = plan(12)
    assert p.est_time_s == pytest.approx(12 * 30 * p.epochs / cpu_lora_tokens_per_s(SMOL.parameters, 2), rel=0.02)


def test_a_model_too_large_for_the_machine_is_refused_with_the_estimate():
    huge = ModelShape(70_000_000_000, 80, 8192, 128_000)
    with pytest.raises(ValidationError) as e:
        plan(12, shape=huge)                      # LoRA: the frozen fp32 base alone is 260 GiB
    msg = str(e.value)
    assert "needs about" in msg and "70.00B-parameter" in msg and "9.6 GiB" in msg
    assert "a smaller model" in e.value.hint and "more RAM" in e.value.hint
    assert "--training-type lora" not in e.value.hint      # it is LoRA already
    with pytest.raises(ValidationError) as full:
        plan(12, shape=huge, training_type="full-rank")
    assert "--training-type lora" in full.value.hint
    gpu = Hardware("cuda", 1, 24.0, True, 8, "L4")
    with pytest.raises(ValidationError, match="L4 memory"):
        plan(12, shape=huge, hw=gpu, technique="rlvr")
    plan(12)                                       # the 135M model fits in 16 GiB
