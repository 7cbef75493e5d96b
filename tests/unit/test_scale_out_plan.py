"""The planner's process layout for --num-processes and --backend (pure), the knobs' checks, and
the rule that only the Ray backend module imports ray."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tuneloop.errors import ValidationError
from tuneloop.spec import check_hyperparameters
from tuneloop.training.plan import DataStats, Hardware, ModelShape, cluster_layout, make_plan, relayout

CPU = Hardware("cpu", 1, 16.0, False, 2)
GPUS = Hardware("cuda", 4, 80.0, True, 32, "H100")
TINY = ModelShape(1_300_000, 4, 128, 4096)
DATA = DataStats(64, 30, 40)
SRC = Path(__file__).resolve().parents[2] / "src" / "tuneloop"


def plan(hw=CPU, technique="sft", **overrides):
    return make_plan(technique=technique, training_type="lora", shape=TINY, data=DATA, hw=hw, defaults={},
                     overrides={"global_batch_size": 8, **overrides})


def test_the_global_batch_is_split_across_the_processes():
    one, two = plan(), plan(num_processes=2)
    assert (one.num_processes, one.world_size, one.per_device_batch, one.grad_accum, one.threads) == (1, 1, 8, 1, 2)
    assert (two.num_processes, two.world_size, two.per_device_batch, two.grad_accum, two.threads) == (2, 2, 4, 1, 1)
    assert one.global_batch == two.global_batch == 8 and one.total_steps == two.total_steps
    assert any(n.startswith("layout: 2 processes on this machine, DDP over gloo") for n in two.notes)
    assert not any(n.startswith("layout:") for n in one.notes)
    three = plan(num_processes=3)     # 8 does not split in 3: rounded up and said
    assert three.global_batch == 9 and any("rounded to 9" in n for n in three.notes)


def test_the_micro_batch_token_budget_holds_per_process():
    long = DataStats(64, 200, 256)    # 512 tokens per micro-batch: 2 rows of 256
    one = make_plan(technique="sft", training_type="lora", shape=TINY, data=long, hw=CPU, defaults={},
                    overrides={"global_batch_size": 8})
    two = make_plan(technique="sft", training_type="lora", shape=TINY, data=long, hw=CPU, defaults={},
                    overrides={"global_batch_size": 8, "num_processes": 2})
    assert (one.per_device_batch, one.grad_accum) == (2, 4) and (two.per_device_batch, two.grad_accum) == (2, 2)


def test_gpus_one_process_each_and_no_more_than_the_machine_has():
    legacy = plan(GPUS)                       # no --num-processes: one process over the GPUs, as before
    assert (legacy.num_processes, legacy.world_size) == (1, 4)
    ddp = plan(GPUS, num_processes=2)
    assert (ddp.num_processes, ddp.world_size, ddp.per_device_batch, ddp.threads) == (2, 2, 4, 0)
    with pytest.raises(ValidationError) as e:
        plan(GPUS, num_processes=8)
    assert e.value.param == "num_processes" and "4" in e.value.hint
    ray = plan(GPUS, num_processes=8, backend="ray")   # a cluster may have more GPUs than this machine
    assert (ray.num_processes, ray.backend) == (8, "ray")


def test_a_job_resumed_on_another_number_of_processes_keeps_its_global_batch_and_schedule():
    two = plan(num_processes=2)
    assert relayout(two, plan(num_processes=2), "j") is None
    one = relayout(two, plan(num_processes=1, learning_rate=0.5), "j")   # a changed knob does not change the job
    assert (one.num_processes, one.per_device_batch, one.grad_accum, one.threads) == (1, 8, 1, 2)
    assert (one.global_batch, one.total_steps, one.learning_rate, one.seed) == \
        (two.global_batch, two.total_steps, two.learning_rate, two.seed)
    assert not any(n.startswith("layout:") for n in one.notes)
    back = relayout(one, plan(num_processes=2), "j")
    assert back.to_dict() == two.to_dict()
    assert relayout(two, plan(num_processes=2, backend="ray"), "j").backend == "ray"
    with pytest.raises(ValidationError) as e:    # 3 processes cannot hold a global batch of 8
        relayout(two, plan(num_processes=3), "j")
    assert "global batch of 8" in str(e.value) and "--num-processes 1 / 2 / 4 / 8" in e.value.hint
    assert "--force" in e.value.hint and e.value.param == "num_processes"


def test_a_ray_plan_is_laid_out_on_the_cluster_nodes():
    cpu = plan(num_processes=2, backend="ray")
    laid = cluster_layout(cpu, [{"CPU": 2.0, "node:10.0.0.1": 1.0}], {"CPU": 2.0}, "head:6379", local_cores=2)
    [note] = [n for n in laid.notes if n.startswith("cluster:")]
    assert "1 node with 2 CPUs and 0 GPUs in all; 2 Ray Train workers of 1 CPU each (2 on node 10.0.0.1)" in note
    assert laid.est_time_s == round(cpu.est_time_s + 11.0, 1) and "free" not in note
    busy = cluster_layout(cpu, [{"CPU": 1.0}, {"CPU": 1.0}], {"CPU": 0.0}, "head:6379", local_cores=2)
    assert "(1 on node 1, 1 on node 2)" in busy.notes[-1] and "now only 0 CPU free" in busy.notes[-1]
    gpu = plan(GPUS, num_processes=8, backend="ray")
    nodes = [{"CPU": 32.0, "GPU": 4.0, "node:a": 1.0}, {"CPU": 32.0, "GPU": 4.0, "node:b": 1.0}]
    laid = cluster_layout(gpu, nodes, {"CPU": 64.0, "GPU": 8.0}, "ray://head:10001", local_cores=32)
    assert "8 Ray Train workers of 1 CPU and 1 GPU each (4 on node a, 4 on node b)" in laid.notes[-1]
    with pytest.raises(ValidationError) as e:
        cluster_layout(gpu, nodes[:1], {}, "ray://head:10001", local_cores=32)
    assert "room for 4" in str(e.value) and "--num-processes 4" in e.value.hint
    with pytest.raises(ValidationError) as e:   # a GPU plan on a CPU-only cluster
        cluster_layout(gpu, [{"CPU": 64.0}], {}, "head:6379", local_cores=32)
    assert "0 GPUs in all, room for 0" in str(e.value) and "machine with GPUs" in e.value.hint


def test_several_machines_split_the_global_batch_over_all_their_ranks():
    from tuneloop.service.launch import node_rank, rendezvous

    two = plan(nodes=2, num_processes=2)
    assert (two.nodes, two.num_processes, two.world_size, two.per_device_batch, two.global_batch) == (2, 2, 4, 2, 8)
    assert any(n.startswith("layout: 2 machines x 2 processes each (torchrun rendezvous") and "x 4 = global batch 8" in n
               for n in two.notes)
    with pytest.raises(ValidationError) as e:
        plan(nodes=2, backend="ray")
    assert e.value.param == "nodes"
    with pytest.raises(ValidationError) as e:    # a job does not move onto more machines on resume
        relayout(plan(num_processes=2), two, "j")
    assert "--force" in e.value.hint
    assert rendezvous(2, {"TUNELOOP_MASTER_ADDR": "10.0.0.1:29500"}) == ("10.0.0.1", 29500)
    for bad in ({}, {"TUNELOOP_MASTER_ADDR": "10.0.0.1"}):
        with pytest.raises(ValidationError) as e:
            rendezvous(2, bad)
        assert "TUNELOOP_MASTER_ADDR=HOST:PORT" in str(e.value) and "TUNELOOP_NODE_RANK=0" in e.value.hint
    assert node_rank(2, {}) == 0 and node_rank(2, {"TUNELOOP_NODE_RANK": "1"}) == 1
    with pytest.raises(ValidationError):
        node_rank(2, {"TUNELOOP_NODE_RANK": "2"})


def test_the_knobs_are_checked_and_scoped():
    assert check_hyperparameters({"num_processes": 2, "backend": "ray"}, "lora", "sft") == \
        {"num_processes": 2, "backend": "ray"}
    with pytest.raises(ValidationError) as e:
        check_hyperparameters({"backend": "slurm"}, "lora", "sft")
    assert "local, ray" in str(e.value) and e.value.param == "backend"
    with pytest.raises(ValidationError) as e:
        check_hyperparameters({"num_processes": 2}, "lora", "rlvr")
    assert "sft and dpo" in str(e.value)


def test_the_ray_backend_wants_an_address():
    from tuneloop.service.ray_backend import check_ray, ray_address

    with pytest.raises(ValidationError) as e:
        ray_address({})
    assert "TUNELOOP_RAY_ADDRESS" in str(e.value) and "ray start --head" in e.value.hint
    assert ray_address({"TUNELOOP_RAY_ADDRESS": " 127.0.0.1:6379 "}) == "127.0.0.1:6379"
    assert "127.0.0.1:6379" in check_ray({"TUNELOOP_RAY_ADDRESS": "127.0.0.1:6379"})


def test_only_the_ray_backend_imports_ray():
    importers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.add(path.relative_to(SRC).as_posix())
    assert importers == {"service/ray_backend.py"}
