"""--sharding auto|ddp|fsdp (pure): auto shards with FSDP exactly when one full copy of the model's
weights, gradients and optimizer states does not fit a rank's memory; the refusals name their fix;
the TrainingArguments an FSDP plan becomes; a job does not resume across DDP and FSDP."""

from __future__ import annotations

import pytest

from tuneloop.errors import ValidationError
from tuneloop.spec import check_hyperparameters
from tuneloop.training.common import distributed_kwargs
from tuneloop.training.plan import (RUNTIME_GB, DataStats, Hardware, ModelShape, make_plan, model_states_bytes,
                                    relayout)

GPUS = Hardware("cuda", 4, 80.0, True, 32, "H100")
CPU = Hardware("cpu", 1, 16.0, False, 2)
SEVEN_B = ModelShape(7_000_000_000, 32, 4096, 32_000)
DATA = DataStats(64, 30, 40)


def plan(training_type="full-rank", hw=GPUS, shape=SEVEN_B, **overrides):
    return make_plan(technique="sft", training_type=training_type, shape=shape, data=DATA, hw=hw, defaults={},
                     overrides={"global_batch_size": 8, **overrides})


def test_auto_picks_fsdp_when_the_model_states_exceed_a_device_and_ddp_otherwise():
    budget = 0.85 * GPUS.memory_gb
    full = model_states_bytes(SEVEN_B, False, "bf16") / 2**30     # 18 B/param: ~117 GiB, over 68 GiB
    lora = model_states_bytes(SEVEN_B, True, "bf16") / 2**30      # frozen bf16 base + adapters: ~14 GiB
    assert RUNTIME_GB["cuda"] + full > budget > RUNTIME_GB["cuda"] + lora
    sharded = plan(num_processes=4)
    assert sharded.sharding == "fsdp" and sharded.est_peak_memory_gb < budget
    assert any(n.startswith("layout: 4 processes on this machine, FSDP over NCCL") for n in sharded.notes)
    [note] = [n for n in sharded.notes if n.startswith("fsdp:")]
    assert f"sharded over 4 ranks, ~{full / 4:.2f} GiB of them per rank (auto:" in note, note
    assert plan("lora", num_processes=4).sharding == "ddp"
    # the same decision on a CPU, whose RAM the processes share (a budget of 0.6 x 16 / 2 GiB each)
    mid = ModelShape(300_000_000, 24, 1024, 32_000)        # full-rank fp32: 4.5 GiB of states
    assert plan(hw=CPU, shape=mid, num_processes=2).sharding == "fsdp"
    assert plan("lora", hw=CPU, shape=mid, num_processes=2).sharding == "ddp"


def test_the_sharded_estimate_is_what_lets_the_job_fit():
    with pytest.raises(ValidationError, match="needs about"):
        plan(num_processes=4, sharding="ddp")     # a full copy per GPU does not fit: refused as before
    ddp = plan("lora", num_processes=4)
    fsdp = plan("lora", num_processes=4, sharding="fsdp")   # asked for although it fits
    assert fsdp.sharding == "fsdp" and fsdp.est_peak_memory_gb < ddp.est_peak_memory_gb
    assert any("(asked for with --sharding fsdp)" in n for n in fsdp.notes)
    assert plan(num_processes=1, shape=ModelShape(1_300_000, 4, 128, 4096)).sharding == "ddp"


def test_fsdp_needs_ranks_on_the_local_launcher():
    with pytest.raises(ValidationError) as one:
        plan("lora", sharding="fsdp")
    assert one.value.param == "sharding" and "--num-processes 2" in one.value.hint
    with pytest.raises(ValidationError) as ray:
        plan("lora", num_processes=2, sharding="fsdp", backend="ray")
    assert ray.value.param == "sharding" and "--backend local" in ray.value.hint
    with pytest.raises(ValidationError, match="must be one of auto, ddp, fsdp"):
        check_hyperparameters({"sharding": "zero3"}, "lora", "sft")


def test_an_fsdp_plan_becomes_fsdp2_with_full_state_dicts():
    kwargs = distributed_kwargs(plan(num_processes=4))
    assert kwargs["fsdp"] is True and kwargs["ddp_backend"] == "nccl"
    assert kwargs["fsdp_config"]["version"] == 2 and kwargs["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"
    assert "fsdp" not in distributed_kwargs(plan("lora", num_processes=4))


def test_a_job_does_not_resume_across_ddp_and_fsdp():
    ddp, fsdp = plan("lora", num_processes=4), plan("lora", num_processes=4, sharding="fsdp")
    assert relayout(fsdp, plan("lora", num_processes=4, sharding="fsdp"), "j") is None
    with pytest.raises(ValidationError) as e:
        relayout(ddp, fsdp, "j")
    assert e.value.param == "sharding" and "--sharding ddp" in e.value.hint
