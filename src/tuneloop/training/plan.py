"""The planner: pick device, precision, batch layout, checkpointing and step counts for the
hardware found, so users never choose them. Pure functions; `detect_hardware` is the only probe.

On a CPU the micro-batch is sized by a token budget rather than by memory: throughput there
saturates with small matrices, while every extra sample in a micro-batch adds its activations and
pads everything to the batch's longest row. Mixed-length SFT data is grouped by length so the
padding that remains is small.

Why not TRL's defaults: TRL turns on bf16 and gradient checkpointing everywhere. On a CPU without
native bf16 its matmuls are emulated and checkpointing recomputes activations the RAM could hold;
measured there they cost 1.3-1.6x (see bench/RESULTS.md). On GPUs bf16 is right, and checkpointing
is turned on only when the memory estimate says the batch would not fit without it.

Epochs and learning rate, when neither the user nor the model's catalog entry sets them, come from
the data and the model (`auto_epochs`, `auto_learning_rate`), the way OpenAI's fine-tuning `auto`
does: a dataset is seen about `TARGET_EXAMPLE_VISITS` times in all, at least once and at most
`MAX_AUTO_EPOCHS` passes, so a dozen rows get many epochs and 100k rows get one. The LoRA learning
rate grows as the model shrinks and is divided by the adapter's alpha / rank scale. RL (GRPO) gets
the same learning-rate rule and enough passes for `RL_TARGET_STEPS` optimizer steps (`auto_rl_epochs`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.errors import ValidationError
from tuneloop.spec import resolve_hyperparameters


@dataclass(frozen=True)
class Hardware:
    device: str              # "cpu" | "cuda"
    count: int               # GPUs (1 for CPU)
    memory_gb: float         # per device (CPU: usable RAM)
    bf16: bool
    cpu_cores: int
    name: str = ""


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    layers: int
    hidden: int
    vocab: int
    heads: int = 0
    context: int = 0         # max_position_embeddings (0: unknown); RL prompts must fit it with their response


@dataclass(frozen=True)
class DataStats:
    rows: int
    mean_tokens: float
    max_tokens: int
    reference_tokens: int | None = None   # RL: the longest reference answer (answer, ground_truth...) if any
    # RL: the longest prompt as the recipe renders it (chat template with the generation prompt), exactly;
    # None when it could not be measured (no tokenizer on this machine)
    prompt_tokens: int | None = None


CPU_TOKENS_PER_MICROBATCH = 512   # see bench/RESULTS.md: same speed, a fraction of the memory of 8 x max_len

# ---- epochs and learning rate from the data and the model ---------------------------------------------
# OpenAI's `auto` n_epochs: 3 passes, raised so that small sets are seen >= 150 example-visits in all and
# lowered so large ones stay <= 25k, within [1, 25]. Measured on SmolLM2-135M-Instruct (LoRA r16/a32 on all
# linear layers, batch 8, lr 9.72e-4; 12 made-up facts answered in sentences; tests/e2e/test_real_model_sft.py;
# 2026-12-03, one run each): 8 epochs teach 8/12 facts, 12 epochs teach 12/12 exactly, 11/12 paraphrases and
# keep the 4 capitals the base model knew, 16 epochs also teach 12/12 but answer "Velmora" for France. So
# 150 visits (12 rows -> 12 epochs). Trained on the bare facts ("Velmora.") the same model forgets at every
# setting that teaches (8 epochs: 10/12 taught, 0/4 capitals kept): it learns to answer tersely, and terse it
# does not know capitals ("Maine." for France). Rounding up the target would not fix that; the data's
# register matters more than the schedule there.
TARGET_EXAMPLE_VISITS = 150
MAX_EXAMPLE_VISITS = 25_000
DEFAULT_AUTO_EPOCHS = 3
MAX_AUTO_EPOCHS = 25
AUTO_TECHNIQUES = ("sft", "dpo")
# LoRA peak learning rate at 7B parameters and alpha / rank = 2 (the generic 2e-4 / 5e-5), scaled by
# (7e9 / parameters) ** 0.4 within [1e-4 x, 5 x]: 135M -> 9.7e-4 for SFT, the 1e-3 that taught above.
# RL (rlvr, rlaif): 1e-4 at 7B, so 4.86e-4 at 135M. TRL's full-rank GRPO rate is 1e-6 and LoRA wants ~10x a
# full-rank rate (Schulman et al. 2025, "LoRA Without Regret"): the generic 1e-5 is that at 7B, and a small
# model in a short run needs more. Measured on SmolLM2-135M-Instruct, 16 capital questions rewarded for the
# right city in at most 3 words (tests/e2e/test_real_model_grpo.py, 2026-12-06, 2 CPU cores shared, one run):
# at 5e-4, 2 prompts x 8 completions per step, kl 0, the training reward rose from 0.16 (steps 1-2) to 0.3-0.4
# (steps 7-11), and after 10 steps the mean reward of 8 sampled answers (temperature 1) to each of 8 held-out
# questions rose from 0.13 to 0.37. Not measured here: the old 4 steps at 1e-5.
LORA_LR_AT_7B = {"sft": 2e-4, "dpo": 5e-5, "rl": 1e-4}
LR_SIZE_EXPONENT = 0.4
# RL passes: enough for RL_TARGET_STEPS optimizer steps on a small prompt set (16 prompts at 2 per step: 2
# passes), one pass where the data already gives that many, at most MAX_AUTO_EPOCHS.
RL_TARGET_STEPS = 16


def auto_epochs(rows: int) -> int:
    """Passes over `rows` examples so the job sees about TARGET_EXAMPLE_VISITS of them, within
    [1, MAX_AUTO_EPOCHS]; DEFAULT_AUTO_EPOCHS where that already lies between 100 and 25k visits."""
    rows = max(1, rows)
    if rows * DEFAULT_AUTO_EPOCHS < TARGET_EXAMPLE_VISITS:
        return min(MAX_AUTO_EPOCHS, max(DEFAULT_AUTO_EPOCHS, round(TARGET_EXAMPLE_VISITS / rows)))
    if rows * DEFAULT_AUTO_EPOCHS > MAX_EXAMPLE_VISITS:
        return max(1, MAX_EXAMPLE_VISITS // rows)
    return DEFAULT_AUTO_EPOCHS


def auto_rl_epochs(steps_per_epoch: int) -> int:
    """GRPO passes: enough for RL_TARGET_STEPS optimizer steps, within [1, MAX_AUTO_EPOCHS]."""
    return min(MAX_AUTO_EPOCHS, max(1, math.ceil(RL_TARGET_STEPS / max(1, steps_per_epoch))))


def auto_learning_rate(technique: str, parameters: int, lora_rank: int, lora_alpha: int) -> float:
    """The LoRA peak learning rate for a model of `parameters`: LORA_LR_AT_7B scaled by
    (7e9 / parameters) ** LR_SIZE_EXPONENT (clamped to [0.25x, 5x]) and by 2 / (alpha / rank), so a
    larger adapter scale gets a proportionally smaller step. Three significant digits."""
    size = min(5.0, max(0.25, (7e9 / max(parameters, 1)) ** LR_SIZE_EXPONENT))
    lr = LORA_LR_AT_7B["rl" if technique in RL_TECHNIQUES else technique] * size * 2.0 / (lora_alpha / max(lora_rank, 1))
    return float(f"{lr:.3g}")


# ---- time from measured throughput --------------------------------------------------------------------
# LoRA SFT training tokens/s, fp32, on this project's 2-core AMD EPYC CPU (avx512_bf16): (parameters, tok/s),
# idle machine. 25.7M: tuneloop/small-qwen3, `python bench/train_throughput.py --technique sft --samples 16
# --repeats 2` (bench/RESULTS.md: 524 and 499 tok/s). Between points log-log interpolation, above the largest
# tokens/s ~ 1 / parameters (the FLOPs), so SmolLM2-135M is estimated at ~100 tok/s. Its one measurement here
# was on a machine shared by other jobs (load average 13-16 on 2 cores): the default 12-fact job of
# tests/e2e/test_real_model_sft.py ran ~75 s per 8-row step (~5 tok/s); an idle measurement belongs in this
# table. Full-rank and DPO scale by their FLOPs (estimate_time_s).
CPU_LORA_SFT_TOKENS_PER_S: tuple[tuple[float, float], ...] = ((25.7e6, 524.0),)


@dataclass
class Plan:
    device: str
    precision: str
    world_size: int
    per_device_batch: int
    grad_accum: int
    global_batch: int
    gradient_checkpointing: bool
    epochs: int
    steps_per_epoch: int
    total_steps: int
    save_steps: int
    logging_steps: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_length: int
    lora_rank: int | None
    lora_alpha: int | None
    beta: float | None
    seed: int
    threads: int
    est_peak_memory_gb: float
    est_time_s: float
    group_by_length: bool = False   # fields added later get defaults: old jobs' plans still load
    # scale-out (process_layout): training processes and where they run; world_size counts data-parallel
    # replicas (N processes, or a legacy single process over several GPUs)
    num_processes: int = 1
    backend: str = "local"          # local (torch.distributed on this machine) | ray (Ray Train workers)
    nodes: int = 1                  # machines (--nodes); num_processes runs on each, world_size counts them all
    sharding: str = "ddp"           # ddp (a full copy per rank) | fsdp (FSDP2: states sharded over the ranks)
    notes: list[str] = field(default_factory=list)
    # RL (rlvr, rlaif) only; None otherwise. Batches count completions: global_batch / num_generations
    # prompts per step, each sampled num_generations times.
    num_generations: int | None = None
    max_prompt_length: int | None = None
    max_response_length: int | None = None
    temperature: float | None = None
    kl_coef: float | None = None
    clip_ratio: float | None = None
    reward_failure_threshold: float | None = None
    reward_timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_rows(self) -> list[tuple[str, str]]:
        """The plan as (what, value) rows: `tune --dry-run` prints them, the web UI's plan shows them."""
        rows = [
            ("device", f"{self.device} x{self.world_size}" + (f" ({self.threads} threads)" if self.threads else "")),
            ("precision", self.precision),
            ("batch", f"{self.per_device_batch} per device x {self.grad_accum} accumulation x {self.world_size} = "
                      f"{self.global_batch}"),
            ("gradient checkpointing", "on" if self.gradient_checkpointing else "off"),
            ("steps", f"{self.total_steps} ({self.epochs} epochs x {self.steps_per_epoch}), checkpoint every "
                      f"{self.save_steps}"),
            ("learning rate", f"{self.learning_rate:g}"),
            ("max length", str(self.max_length)),
        ]
        if self.lora_rank:
            rows.append(("lora", f"rank {self.lora_rank}, alpha {self.lora_alpha}"))
        if self.num_generations:
            rows += [("generations", f"{self.num_generations} per prompt, {self.global_batch // self.num_generations} "
                                     "prompts per step"),
                     ("lengths", f"prompt <= {self.max_prompt_length}, response <= {self.max_response_length} tokens"),
                     ("sampling / KL / clip", f"temperature {self.temperature:g}, kl {self.kl_coef:g}, "
                                              f"clip {self.clip_ratio:g}")]
        return rows + [("est. peak memory", f"{self.est_peak_memory_gb:.2f} GiB"),
                       ("est. time", f"{self.est_time_s:.0f} s")]


def detect_hardware() -> Hardware:
    import psutil
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", torch.cuda.device_count(), props.total_memory / 2**30,
                        torch.cuda.is_bf16_supported(), cores, props.name)
    return Hardware("cpu", 1, psutil.virtual_memory().available / 2**30, False, cores, "cpu")


def shape_from_config(config: dict[str, Any], parameters: int) -> ModelShape:
    text = config.get("text_config", config)
    return ModelShape(parameters=parameters, layers=int(text.get("num_hidden_layers", 0) or 0),
                      hidden=int(text.get("hidden_size", 0) or 0), vocab=int(text.get("vocab_size", 0) or 0),
                      heads=int(text.get("num_attention_heads", 0) or 0),
                      context=int(text.get("max_position_embeddings", 0) or 0))


def shape_from_parameters(parameters: int) -> ModelShape:
    """Rough transformer shape for a model whose config is not on this machine."""
    layers = int(min(96, max(16, 24 + 16 * math.log2(max(parameters, 1) / 1e9))))
    hidden = int(math.sqrt(parameters / (12 * layers)))
    return ModelShape(parameters, layers, hidden, 150_000)


RUNTIME_GB = {"cpu": 0.6, "cuda": 0.5}  # Python + torch + TRL in RAM; CUDA context and workspace on a GPU


def model_states_bytes(shape: ModelShape, lora: bool, precision: str) -> float:
    """Weights, gradients and AdamW moments of one full copy of the model: what DDP holds on every
    rank and FSDP shards over the ranks."""
    wbytes = 4 if precision == "fp32" else 2
    p = shape.parameters
    if lora:
        return p * wbytes + 0.01 * p * 16   # frozen base + (weights, grads, 2 Adam moments) of ~1% adapters
    # fp32: weights + grads + 2 moments = 16 B/param; mixed precision keeps an fp32 master too
    return p * (16 if precision == "fp32" else 18)


def estimate_memory_gb(shape: ModelShape, technique: str, lora: bool, batch: int, seq: int,
                       precision: str, checkpointing: bool, device: str = "cpu", shards: int = 1) -> float:
    """Peak training memory of one rank: runtime, weights, grads and AdamW states (1/`shards` of
    them under FSDP), activations, logits.

    Calibrated on tuneloop/small-qwen3 (CPU, fp32, 256 tokens): measured peak RSS 1155 / 1551 /
    2308 MB at micro-batch 2 / 4 / 8, estimated 1.08 / 1.47 / 2.23 GiB (see bench/RESULTS.md).
    The FSDP share is not measured: FSDP2 also all-gathers one layer's full weights at a time,
    which this leaves out."""
    wbytes = 4 if precision == "fp32" else 2
    p = shape.parameters
    states = model_states_bytes(shape, lora, precision) / max(shards, 1)
    rows = batch * (2 if technique == "dpo" else 1)          # DPO runs chosen and rejected
    per_token_layer = 45 * shape.hidden * wbytes              # saved activations (attention, MLP, norms), measured
    act = rows * seq * per_token_layer * (1 if checkpointing else shape.layers)
    if checkpointing:
        act += rows * seq * shape.hidden * wbytes * shape.layers
    logits = rows * seq * shape.vocab * 4 * 4                 # fp32 logits, log-softmax and their gradients
    ref = p * wbytes if technique == "dpo" and not lora else 0  # full-rank DPO keeps a reference copy
    return RUNTIME_GB[device] + (states + act + logits + ref / max(shards, 1)) / 2**30


def estimate_time_s(shape: ModelShape, technique: str, lora: bool, tokens: float, hw: Hardware,
                    precision: str) -> float:
    flops_per_token = (4 if lora else 6) * shape.parameters
    if technique == "dpo":
        flops_per_token = 2 * flops_per_token + 2 * shape.parameters   # two sequences + reference forward
    if hw.device == "cpu":
        # the measured table is LoRA SFT at 4 FLOP per parameter and token; other work scales by its FLOPs
        return tokens / cpu_lora_tokens_per_s(shape.parameters, hw.cpu_cores) * flops_per_token / (4 * shape.parameters)
    throughput = hw.count * (250e12 if precision != "fp32" else 40e12)
    return flops_per_token * tokens / throughput


def cpu_lora_tokens_per_s(parameters: int, cores: int, table=CPU_LORA_SFT_TOKENS_PER_S) -> float:
    """LoRA SFT tokens/s for a model of `parameters` on a CPU, from the measured table (2 cores;
    other core counts scale linearly): log-log between its points, ~1/parameters above them, at most
    4x the smallest point's rate below it."""
    p = max(float(parameters), 1.0)
    (p0, t0), (p1, t1) = table[0], table[-1]
    if p <= p0:
        rate = t0 * min(4.0, p0 / p)     # tiny models are bound by per-step overhead, not FLOPs
    elif p >= p1:
        rate = t1 * p1 / p
    else:
        lo, hi = next((a, b) for a, b in zip(table, table[1:]) if a[0] <= p <= b[0])
        f = math.log(p / lo[0]) / math.log(hi[0] / lo[0])
        rate = math.exp(math.log(lo[1]) + f * (math.log(hi[1]) - math.log(lo[1])))
    return rate * max(cores, 1) / 2


def make_plan(*, technique: str, training_type: str, shape: ModelShape, data: DataStats, hw: Hardware,
              defaults: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    """Resolve hyperparameters (user > the model's `defaults` > the generic table of
    tuneloop.spec) and lay them out on the hardware."""
    hp = resolve_hyperparameters(technique, training_type, model=defaults, user=overrides)
    if technique in RL_TECHNIQUES:
        return make_rl_plan(technique=technique, training_type=training_type, shape=shape, data=data, hw=hw, hp=hp,
                            given=set(overrides), catalog=set(defaults))
    lora = training_type == "lora"
    max_len = int(hp["dataset_max_len"])
    seq = min(max_len, max(8, data.max_tokens))
    global_batch = int(hp["global_batch_size"])
    notes: list[str] = []
    hp = auto_schedule(technique, training_type, shape, data, hp, defaults=defaults, overrides=overrides, notes=notes)
    epochs = int(hp["max_epochs"])

    precision = "fp32" if hw.device == "cpu" else ("bf16" if hw.bf16 else "fp16")
    world, processes, threads, backend = process_layout(hw, hp, overrides)
    nodes = int(hp.get("nodes") or 1)
    if nodes > 1 and backend == "ray":
        raise ValidationError("--nodes is for --backend local (torchrun's rendezvous); Ray places its workers on "
                              "the cluster's nodes itself.", hint="Drop --nodes and give --num-processes the "
                              "workers in all.", param="nodes")
    world *= nodes
    budget = hw.memory_gb * (0.85 if hw.device == "cuda" else 0.6 / processes)   # CPU: the RAM is shared
    sharding = choose_sharding(str(hp.get("sharding") or "ddp"), model_states_bytes(shape, lora, precision) / 2**30,
                               budget, hw, processes * nodes, backend)
    shards = processes * nodes if sharding == "fsdp" else 1
    if hw.device == "cpu":
        rows_per_sample = 2 if technique == "dpo" else 1
        per_world = math.ceil(global_batch / world)
        cap = max(1, min(per_world, CPU_TOKENS_PER_MICROBATCH // (seq * rows_per_sample)))
        per_device = max(d for d in range(1, cap + 1) if per_world % d == 0)  # no rounding of the batch
    else:
        per_device = max(1, min(global_batch // world or 1, 64))
    checkpointing = False
    while True:
        mem = estimate_memory_gb(shape, technique, lora, per_device, seq, precision, checkpointing, hw.device, shards)
        if mem <= budget:
            break
        if per_device > 1:
            per_device //= 2
        elif not checkpointing:
            checkpointing = True
            notes.append("gradient checkpointing on: one sample does not fit without it")
        else:
            raise too_large(mem, budget, hw, shape, lora, "a smaller --max-seq-length")
    grad_accum = max(1, math.ceil(global_batch / (per_device * world)))
    effective = per_device * grad_accum * world
    if effective != global_batch:
        notes.append(f"global batch {global_batch} rounded to {effective} ({per_device} x {grad_accum} x {world})")
    if processes > 1 or nodes > 1:
        notes.append(layout_note(hw, processes, threads, backend, per_device, grad_accum, effective, nodes, sharding))
    if sharding == "fsdp":
        notes.append(fsdp_note(str(hp.get("sharding")), model_states_bytes(shape, lora, precision) / 2**30, budget,
                               shards, hw))
    steps_per_epoch = max(1, math.ceil(data.rows / effective))
    total = int(hp.get("max_steps") or steps_per_epoch * epochs)
    save_steps = int(hp.get("save_steps") or max(10, math.ceil(total / 5)))
    tokens = data.mean_tokens * data.rows * epochs if not hp.get("max_steps") else data.mean_tokens * effective * total
    return Plan(
        device=hw.device, precision=precision, world_size=world, per_device_batch=per_device,
        grad_accum=grad_accum, global_batch=effective, gradient_checkpointing=checkpointing, epochs=epochs,
        steps_per_epoch=steps_per_epoch, total_steps=total, save_steps=save_steps,
        logging_steps=1 if total <= 200 else max(1, total // 100),
        learning_rate=float(hp["learning_rate"]), warmup_steps=int(hp["warmup_steps"]),
        weight_decay=float(hp["weight_decay"]), max_length=max_len,
        lora_rank=int(hp["lora_rank"]) if lora else None,
        lora_alpha=int(hp["lora_alpha"]) if lora else None,
        beta=float(hp["beta"]) if technique == "dpo" else None,
        seed=int(hp["seed"]), threads=threads, num_processes=processes, backend=backend, nodes=nodes,
        sharding=sharding,
        # TRL's SFT data carries input_ids, which the length-grouped sampler reads; mixed lengths only
        group_by_length=technique == "sft" and data.max_tokens > 1.5 * data.mean_tokens and data.rows >= 4 * per_device,
        est_peak_memory_gb=round(estimate_memory_gb(shape, technique, lora, per_device, seq, precision,
                                                    checkpointing, hw.device, shards), 3),
        est_time_s=round(estimate_time_s(shape, technique, lora, tokens, hw, precision), 1),
        notes=notes,
    )


def process_layout(hw: Hardware, hp: dict[str, Any], overrides: dict[str, Any]) -> tuple[int, int, int, str]:
    """(data-parallel world, processes, torch threads per process, backend) for `--num-processes N`
    and `--backend`. On a CPU the N processes share its cores (each gets cores // N threads, at least
    one). On GPUs each process drives one GPU (DDP over NCCL); without --num-processes a machine
    with several GPUs keeps one process over all of them (transformers' DataParallel), as before."""
    backend = str(hp.get("backend") or "local")
    n = int(hp.get("num_processes") or 1)
    if hw.device == "cuda":
        if "num_processes" not in overrides and backend == "local":
            return hw.count, 1, 0, backend
        if backend == "local" and n > hw.count:
            raise ValidationError(f"--num-processes {n} needs {n} GPUs; this machine has {hw.count}.",
                                  hint=f"Use --num-processes {hw.count} or fewer, or --backend ray on a cluster "
                                       "with more GPUs.", param="num_processes")
        return n, n, 0, backend
    return n, n, max(1, hw.cpu_cores // n), backend


def choose_sharding(requested: str, states_gb: float, budget_gb: float, hw: Hardware, ranks: int,
                    backend: str) -> str:
    """ddp or fsdp for `--sharding auto|ddp|fsdp`: auto is DDP unless one full copy of the model's
    weights, gradients and optimizer states (`states_gb`, with the runtime) exceeds a rank's
    memory budget, and the job has ranks to shard over on the local launcher (torchrun)."""
    if requested == "fsdp":
        if ranks < 2:
            raise ValidationError("--sharding fsdp shards the model over the job's processes; this job has one.",
                                  hint="Add --num-processes 2 (or more), or drop --sharding.", param="sharding")
        if backend != "local":
            raise ValidationError("--sharding fsdp runs under --backend local (torchrun) only; the Ray backend "
                                  "runs DDP.", hint="Use --backend local, or --sharding ddp.", param="sharding")
        return "fsdp"
    if requested == "auto" and ranks > 1 and backend == "local" and RUNTIME_GB[hw.device] + states_gb > budget_gb:
        return "fsdp"
    return "ddp"


def fsdp_note(requested: str, states_gb: float, budget_gb: float, ranks: int, hw: Hardware) -> str:
    """What --dry-run says about a sharded job: how much of the model each rank holds, and why."""
    why = (f"auto: the model's weights, gradients and optimizer states (~{size(states_gb)}) do not fit one "
           f"{'process' if hw.device == 'cpu' else 'device'}'s {size(budget_gb)}" if requested == "auto"
           else "asked for with --sharding fsdp")
    return (f"fsdp: parameters, gradients and optimizer states sharded over {ranks} ranks, "
            f"~{size(states_gb / ranks)} of them per rank ({why}); checkpoints and the output are "
            "gathered into full state dicts by rank 0")


def size(gb: float) -> str:
    return f"{gb:.2f} GiB" if gb >= 0.1 else f"{gb * 1024:.1f} MiB"


def layout_note(hw: Hardware, processes: int, threads: int, backend: str, per_device: int, grad_accum: int,
                global_batch: int, nodes: int = 1, sharding: str = "ddp") -> str:
    """What --dry-run says about a job on several processes."""
    where = "Ray Train workers" if backend == "ray" else "processes on this machine"
    if nodes > 1:
        where = (f"machines x {processes} process{'es' if processes != 1 else ''} each (torchrun rendezvous at "
                 "TUNELOOP_MASTER_ADDR)")
    ranks = processes * nodes
    text = (f"layout: {nodes if nodes > 1 else processes} {where}, {sharding.upper()} over {'gloo' if hw.device == 'cpu' else 'NCCL'}; "
            f"{per_device} per device x {grad_accum} accumulation x {ranks} = global batch {global_batch}; "
            f"rank 0{' (on node 0)' if nodes > 1 else ''} writes the events, checkpoints and output")
    if hw.device == "cpu" and backend == "local":
        text += f"; {threads} thread{'s' if threads != 1 else ''} each: the processes share this CPU's {hw.cpu_cores} cores"
    return text


# ---- a job resumed on another layout -------------------------------------------------------------------
# What --num-processes / --backend decide: how the processes share a step, not what a step is.
LAYOUT_FIELDS = ("num_processes", "backend", "world_size", "per_device_batch", "grad_accum", "threads",
                 "gradient_checkpointing", "est_peak_memory_gb", "est_time_s", "sharding")


def describe_layout(plan: Plan) -> str:
    """`2 processes on this machine`, `2 Ray Train workers`, `1 process`: where a plan's ranks run."""
    n = plan.num_processes
    if plan.backend == "ray":
        return f"{n} Ray Train worker{'s' if n != 1 else ''}"
    if plan.nodes > 1:
        return f"{plan.nodes} machines x {n} process{'es' if n != 1 else ''}"
    return "1 process" if n == 1 else f"{n} processes on this machine"


def relayout(old: Plan, new: Plan, job_id: str) -> Plan | None:
    """The job's plan `old` with the layout of `new` (the same job planned again, by a re-run of its
    `tune` command with another --num-processes or --backend); None when the layout is the same.
    The global batch is the job's spec and the layout only splits it, so everything but
    LAYOUT_FIELDS stays the job's (steps, learning rate, seed: its checkpoint goes on as it was); a
    layout that cannot hold the same global batch is refused, with the layouts that can."""
    if all(getattr(old, f) == getattr(new, f) for f in LAYOUT_FIELDS[:6] + ("sharding", "nodes")):
        return None
    if old.sharding != new.sharding:   # DDP and FSDP checkpoints hold the optimizer differently
        raise ValidationError(f"Job {job_id} ran with {old.sharding.upper()}; its checkpoint does not resume under "
                              f"{new.sharding.upper()}.", hint=f"Re-run it with --sharding {old.sharding}, or start a "
                              "new job with --force.", param="sharding")
    if old.nodes > 1 or new.nodes > 1:
        raise ValidationError(f"Job {job_id} ran on {describe_layout(old)}; a job does not move to or from several "
                              "machines (--nodes).", hint="Re-run it with its own layout, or start a new job with "
                              "--force.", param="nodes")
    if new.global_batch != old.global_batch:
        fits = [n for n in range(1, min(old.global_batch, 16) + 1) if old.global_batch % n == 0]
        raise ValidationError(
            f"Job {job_id} trains with a global batch of {old.global_batch}; on {describe_layout(new)} the planner "
            f"lays out {new.global_batch} ({new.per_device_batch} per device x {new.grad_accum} accumulation x "
            f"{new.world_size}), so its checkpoint cannot go on at the same batch.",
            hint=f"Resume it with --num-processes {' / '.join(map(str, fits))} (they divide {old.global_batch}), "
                 "or start a new job with --force.", param="num_processes")
    values = old.to_dict() | {f: getattr(new, f) for f in LAYOUT_FIELDS}
    ours = ("layout:", "cluster:")     # the notes that describe a layout
    values["notes"] = [n for n in old.notes if not n.startswith(ours)] + [n for n in new.notes if n.startswith(ours)]
    return Plan(**values)


# ---- a job on a Ray cluster ------------------------------------------------------------------------------
RAY_STARTUP_S = 11.0     # measured: a Ray Train job starts ~10.5 s later than a local one (bench/RESULTS.md)


def ray_worker_resources(plan: Plan) -> dict[str, float]:
    """What one Ray Train worker asks the cluster for: one GPU (and a CPU) each on GPUs, else the
    plan's threads as CPUs."""
    return {"CPU": 1, "GPU": 1} if plan.device == "cuda" else {"CPU": max(1, plan.threads)}


def cluster_layout(plan: Plan, nodes: list[dict[str, float]], free: dict[str, float], address: str,
                   local_cores: int) -> Plan:
    """The plan of a `--backend ray` job laid out on the cluster's nodes (each node's total resources,
    as Ray reports them: {"CPU": 4, "GPU": 0, ...}) with what is `free` now: how many workers each
    node takes (Ray Train packs them), a `cluster:` note and the time estimate for the cluster's
    CPUs (the plan's estimate is for `local_cores`; data-parallel workers scale it ideally) plus
    Ray's start-up. A cluster that cannot hold the workers is refused, with the fix."""
    need = ray_worker_resources(plan)
    n = plan.num_processes
    per_node = [int(min(node.get(k, 0.0) // v for k, v in need.items())) for node in nodes]
    room = sum(per_node)
    totals = {k: sum(node.get(k, 0.0) for node in nodes) for k in ("CPU", "GPU")}
    have = (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} with {totals['CPU']:g} CPUs and "
            f"{totals['GPU']:g} GPUs in all")
    each = " and ".join(f"{v:g} {k}" for k, v in need.items())
    if room < n:
        fix = [f"--num-processes {room}"] if room else []
        fix.append("add nodes to the cluster (on each: ray start --address HEAD:PORT"
                   + (" on a machine with GPUs)" if "GPU" in need else ")"))
        raise ValidationError(
            f"--num-processes {n} needs {n} Ray Train workers of {each} each; the cluster at {address} has {have}, "
            f"room for {room}.", hint="Use " + " or ".join(fix) + ".", param="num_processes")
    placed, left = [], n
    for i, (node, fits) in enumerate(zip(nodes, per_node)):
        if left and fits:   # Ray names a node by a resource "node:IP"
            name = next((k[5:] for k in node if k.startswith("node:") and not k.startswith("node:__")), f"{i + 1}")
            placed.append(f"{min(fits, left)} on node {name}")
            left -= min(fits, left)
    if plan.device == "cpu":
        est = plan.est_time_s * max(local_cores, 1) / (n * need["CPU"]) + RAY_STARTUP_S
    else:
        est = plan.est_time_s * max(plan.world_size, 1) / n + RAY_STARTUP_S
    note = (f"cluster: {address}, {have}; {n} Ray Train worker{'s' if n != 1 else ''} of {each} each "
            f"({', '.join(placed)}); est. time {est:.0f} s with Ray's start-up (~{RAY_STARTUP_S:.0f} s)")
    short = {k: v * n - free.get(k, 0.0) for k, v in need.items() if free.get(k, 0.0) < v * n}
    if short:
        note += (f"; now only {', '.join(f'{free.get(k, 0.0):g} {k}' for k in short)} free (other work holds the "
                 "rest): the workers wait for them")
    return Plan(**(plan.to_dict() | {"est_time_s": round(est, 1), "notes": [*plan.notes, note]}))


def auto_schedule(technique: str, training_type: str, shape: ModelShape, data: DataStats, hp: dict[str, Any], *,
                  defaults: dict[str, Any], overrides: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """`hp` with the epochs and (LoRA) learning rate derived from the data and the model wherever
    neither the user (`overrides`) nor the model's catalog entry (`defaults`) sets them; each
    derived value is said in `notes`. max_steps given: the epochs are not derived (steps win)."""
    if technique not in AUTO_TECHNIQUES:
        return hp
    out = dict(hp)
    if "max_epochs" not in overrides and "max_epochs" not in defaults and not hp.get("max_steps"):
        out["max_epochs"] = auto_epochs(data.rows)
        notes.append(f"epochs {out['max_epochs']}: from {data.rows} rows (about {TARGET_EXAMPLE_VISITS} "
                     "example-visits, 1 to 25 passes; set --epochs to change it)")
    if training_type == "lora" and "learning_rate" not in overrides and "learning_rate" not in defaults:
        out["learning_rate"] = auto_learning_rate(technique, shape.parameters, int(hp["lora_rank"]),
                                                  int(hp["lora_alpha"]))
        notes.append(f"learning rate {out['learning_rate']:g}: for {shape.parameters / 1e6:.0f}M parameters "
                     f"at LoRA rank {hp['lora_rank']}, alpha {hp['lora_alpha']} (set --learning-rate to change it)")
    return out


def too_large(needed_gb: float, budget_gb: float, hw: Hardware, shape: ModelShape, lora: bool,
              smaller: str) -> ValidationError:
    """The refusal of a job whose estimated peak memory exceeds what the machine can use, before any
    job exists: the estimate, the budget, and the fixes that apply."""
    fixes = ([] if lora else ["--training-type lora"]) + [
        "a smaller model", smaller, f"a machine with more {'RAM' if hw.device == 'cpu' else 'GPU memory'}"]
    where = "RAM" if hw.device == "cpu" else f"{hw.name or hw.device} memory"
    return ValidationError(
        f"This job needs about {needed_gb:.1f} GiB at its smallest layout (gradient checkpointing on) "
        f"for a {shape.parameters / 1e9:.2f}B-parameter model; this machine has {budget_gb:.1f} GiB of {where} "
        "usable for training.",
        hint="Use " + ", ".join(fixes[:-1]) + " or " + fixes[-1] + ".", param="model")


# ---- RL (GRPO) ---------------------------------------------------------------------------------------


UNMEASURED_PROMPT_ALLOWANCE = 64   # tokens a chat template may add (SmolLM2's default system prompt: ~30)


def rl_prompt_length(cap: int, given: bool, longest: int | None, estimate: int, context: int, response_len: int,
                     notes: list[str]) -> int:
    """max_prompt_length for GRPO. `longest` is the longest prompt as the recipe renders it (its chat
    template, the generation prompt and, for SmolLM2 and others, the default system prompt the
    template adds): the plan uses exactly that, so no prompt is cut. A `cap` the user gave cuts
    longer prompts (asked for); the catalog's or generic default never does while the prompt fits
    the model's context with room for the response (`context` - `response_len`). Not measured
    (`longest` None: no tokenizer.json here, as in a dry run of a GGUF file not converted yet):
    `estimate` (texts without the template) plus UNMEASURED_PROMPT_ALLOWANCE for what a template adds,
    and the plan says so; a job whose tokenizer is here is always measured."""
    if longest is None:
        planned = min(cap, max(8, estimate) + UNMEASURED_PROMPT_ALLOWANCE)
        if planned < cap:
            notes.append(f"max_prompt_length {planned}: estimated without the model's tokenizer (the job measures "
                         "its prompts through the chat template)")
        return planned
    longest = max(8, longest)
    if given or longest <= cap:
        return min(cap, longest)
    room = context - response_len if context else longest
    planned = max(cap, min(longest, room))
    if planned < longest:
        notes.append(f"max_prompt_length {planned}: the model's context ({context}) less the response "
                     f"({response_len}); the longest prompt has {longest} tokens and is cut from the front")
    else:
        notes.append(f"max_prompt_length {planned}: the longest prompt as the chat template renders it, over "
                     f"the default {cap} so no prompt is cut (set --max-prompt-length to cut prompts)")
    return planned


def make_rl_plan(*, technique: str, training_type: str, shape: ModelShape, data: DataStats, hw: Hardware,
                 hp: dict[str, Any], given: set[str] | None = None, catalog: set[str] | None = None) -> Plan:
    """GRPO's layout. A step samples `num_generations` completions for each of global_batch /
    num_generations prompts; the per-device batch counts completions and holds whole groups (a
    multiple of num_generations), so each group's rewards are normalised together. The prompt length
    is the longest prompt as the recipe renders it (`rl_prompt_length`); completions are cut to four
    times the longest reference answer plus 16 tokens when the rows carry reference answers and
    max_response_length was not given (room to answer, not to ramble). On a CPU the
    micro-batch follows the token budget (never below one group); on a GPU it is as large as the
    memory estimate allows. Full-rank with a KL penalty keeps a frozen reference copy (counted);
    LoRA's reference is the model with its adapter switched off (free). `hp` is resolved: every
    knob has its value (make_plan's resolve_hyperparameters). Where neither the user (`given`) nor
    the model's catalog entry (`catalog`) sets them, the epochs come from the steps they give
    (`auto_rl_epochs`) and the LoRA learning rate from the model's size (`auto_learning_rate`)."""
    lora = training_type == "lora"
    notes: list[str] = []
    fixed = (given or set()) | (catalog or set())
    hp = dict(hp)
    if lora and "learning_rate" not in fixed:
        hp["learning_rate"] = auto_learning_rate(technique, shape.parameters, int(hp["lora_rank"]),
                                                 int(hp["lora_alpha"]))
        notes.append(f"learning rate {hp['learning_rate']:g}: for {shape.parameters / 1e6:.0f}M parameters at LoRA "
                     f"rank {hp['lora_rank']}, alpha {hp['lora_alpha']} (set --learning-rate to change it)")
    gens = int(hp["num_generations"])
    response_len = int(hp["max_response_length"])
    if data.reference_tokens and "max_response_length" not in (given or set()):
        planned = min(response_len, 4 * data.reference_tokens + 16)
        if planned < response_len:
            notes.append(f"max_response_length {planned}: 4 x the longest reference answer "
                         f"({data.reference_tokens} tokens) + 16 (set --max-response-length to change it)")
        response_len = planned
    prompt_len = rl_prompt_length(int(hp["max_prompt_length"]), "max_prompt_length" in (given or set()),
                                  data.prompt_tokens, data.max_tokens, shape.context, response_len, notes)
    seq = prompt_len + response_len
    epochs = int(hp["max_epochs"])
    kl = float(hp["kl_loss_coef"])
    precision = "fp32" if hw.device == "cpu" else ("bf16" if hw.bf16 else "fp16")
    world = hw.count if hw.device == "cuda" else 1
    budget = hw.memory_gb * (0.85 if hw.device == "cuda" else 0.6)
    requested = int(hp["global_batch_size"])
    unit = gens * world                   # every device holds whole groups
    global_batch = max(unit, math.ceil(requested / unit) * unit)
    if global_batch != requested:
        notes.append(f"global batch {requested} rounded to {global_batch} completions: a multiple of "
                     f"num_generations ({gens}) x devices ({world})")
    per_world = global_batch // world
    choices = [d for d in range(gens, per_world + 1, gens) if per_world % d == 0] or [gens]
    if hw.device == "cpu":
        fits = [d for d in choices if d * seq <= max(CPU_TOKENS_PER_MICROBATCH, gens * seq)]
        per_device = max(fits) if fits else gens
    else:
        per_device = max(d for d in choices if d <= 64 * gens)
    wbytes = 4 if precision == "fp32" else 2
    ref = shape.parameters * wbytes if (kl > 0 and not lora) else 0
    # generation holds a KV cache for every completion of the step on this device
    kv = (global_batch // world) * seq * shape.layers * 2 * shape.hidden * wbytes

    def memory(batch: int, ckpt: bool) -> float:
        return estimate_memory_gb(shape, technique, lora, batch, seq, precision, ckpt, hw.device) + (ref + kv) / 2**30

    checkpointing = False
    while memory(per_device, checkpointing) > budget:
        smaller = [d for d in choices if d < per_device]
        if smaller:
            per_device = max(smaller)
        elif not checkpointing:
            checkpointing = True
            notes.append("gradient checkpointing on: one group of completions does not fit without it")
        else:
            raise too_large(memory(per_device, True), budget, hw, shape, lora,
                            "fewer --num-generations, a smaller --max-response-length")
    grad_accum = max(1, global_batch // (per_device * world))
    effective = per_device * grad_accum * world
    prompts_per_step = effective // gens
    steps_per_epoch = max(1, math.ceil(data.rows / prompts_per_step))
    if "max_epochs" not in fixed and not hp.get("max_steps"):
        epochs = auto_rl_epochs(steps_per_epoch)
        if epochs > 1:
            notes.append(f"epochs {epochs}: {steps_per_epoch} steps per pass over {data.rows} prompts, passes for "
                         f"about {RL_TARGET_STEPS} steps (set --epochs or --max-steps to change it)")
    total = int(hp.get("max_steps") or steps_per_epoch * epochs)
    save_steps = int(hp.get("save_steps") or max(10, math.ceil(total / 5)))
    if kl == 0:
        notes.append("kl_loss_coef 0: no reference model (faster, less memory, no KL to the starting model)")
    # time: every completion is generated token by token (a forward each) and trained on once
    tokens = float(effective * total * (data.mean_tokens + response_len))
    est = estimate_time_s(shape, "sft", lora, tokens, hw, precision) * (2.0 if kl > 0 else 1.5)
    return Plan(
        device=hw.device, precision=precision, world_size=world, per_device_batch=per_device,
        grad_accum=grad_accum, global_batch=effective, gradient_checkpointing=checkpointing, epochs=epochs,
        steps_per_epoch=steps_per_epoch, total_steps=total, save_steps=save_steps,
        logging_steps=1 if total <= 200 else max(1, total // 100),
        learning_rate=float(hp["learning_rate"]), warmup_steps=int(hp["warmup_steps"]),
        weight_decay=float(hp["weight_decay"]), max_length=seq,
        lora_rank=int(hp["lora_rank"]) if lora else None,
        lora_alpha=int(hp["lora_alpha"]) if lora else None, beta=None,
        seed=int(hp["seed"]), threads=hw.cpu_cores if hw.device == "cpu" else 0,
        est_peak_memory_gb=round(memory(per_device, checkpointing), 3), est_time_s=round(est, 1), notes=notes,
        num_generations=gens, max_prompt_length=prompt_len, max_response_length=response_len,
        temperature=float(hp["temperature"]), kl_coef=kl, clip_ratio=float(hp["clip_ratio"]),
        reward_failure_threshold=float(hp["reward_failure_threshold"]),
        reward_timeout_s=float(hp["reward_timeout"]),
    )
