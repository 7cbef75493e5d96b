"""What every technique shares: loading the model (tuneloop.models.resolve says which one),
TrainingArguments from the plan, the job callback (metrics events, progress, cancel), and saving
the output with its manifest."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from tuneloop.training.plan import Plan

log = logging.getLogger(__name__)

GENERIC_LORA_TARGETS = "all-linear"


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:  # Llama 3 and others ship no pad token: reuse eos, masked by the collator
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, plan: Plan, lora: bool):
    import torch
    from transformers import AutoModelForCausalLM

    # LoRA keeps the frozen base in the compute precision; full-rank keeps fp32 master weights
    # and lets autocast run bf16/fp16 (TrainingArguments.bf16/fp16).
    dtype = torch.float32
    if lora and plan.precision == "bf16":
        dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    model.config.use_cache = False
    return model


def lora_config(plan: Plan, target_modules: list[str] | str | None):
    from peft import LoraConfig

    return LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_alpha, lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM", target_modules=target_modules or GENERIC_LORA_TARGETS)


def training_kwargs(plan: Plan, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments fields shared by SFTConfig and DPOConfig, from the plan."""
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.per_device_batch,
        per_device_eval_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=plan.grad_accum,
        max_steps=plan.total_steps,
        learning_rate=plan.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=plan.warmup_steps,
        weight_decay=plan.weight_decay,
        logging_steps=plan.logging_steps,
        save_strategy="steps",
        save_steps=plan.save_steps,
        save_total_limit=2,
        seed=plan.seed,
        data_seed=plan.seed,
        use_cpu=plan.device == "cpu",
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        gradient_checkpointing=plan.gradient_checkpointing,
        dataloader_num_workers=0,
        report_to=[],
        disable_tqdm=True,
        save_only_model=False,
        train_sampling_strategy="group_by_length" if plan.group_by_length else "random",
        **distributed_kwargs(plan),
    )


def distributed_kwargs(plan: Plan) -> dict[str, Any]:
    """TrainingArguments for a job on several processes (service/launch.py or the Ray backend
    start them): DDP over gloo on a CPU, NCCL on GPUs, collectives bounded by DDP_TIMEOUT_S so a
    rank that hangs fails the job instead of holding it; every LoRA parameter gets a gradient."""
    if plan.num_processes <= 1:
        return {}
    from tuneloop.training.distributed import DDP_TIMEOUT_S

    kwargs = dict(ddp_backend="gloo" if plan.device == "cpu" else "nccl", ddp_timeout=DDP_TIMEOUT_S,
                  ddp_find_unused_parameters=False)
    if plan.sharding == "fsdp":
        # FSDP2 (fully_shard) on each decoder layer (accelerate wraps the model's _no_split_modules);
        # it keeps requires_grad per parameter, so a LoRA model's frozen base and trained adapters
        # shard together. Checkpoints and the output are full state dicts written by rank 0, the
        # same files as under DDP (plus the optimizer's gathered pytorch_model_fsdp.bin / optimizer.bin).
        kwargs.update(fsdp=True, fsdp_config={"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                              "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True,
                                              "activation_checkpointing": False})
    return kwargs


def fsdp_on_cpu(plan: Plan) -> None:
    """Let accelerate set up FSDP on CPU ranks (gloo). accelerate 1.15 turns its FSDP plugin on only
    for accelerator devices (MULTI_GPU, MULTI_XPU, ...) and silently falls back to DDP for MULTI_CPU,
    while torch's fully_shard itself runs on a CPU device mesh over gloo. Marking the process's
    already-created distributed state as multi-device before the Trainer builds its Accelerator
    makes accelerate take its FSDP path; the device stays the CPU (TrainingArguments.use_cpu).
    Call after the TrainingArguments exist (they create that state) and before the Trainer."""
    if plan.sharding != "fsdp" or plan.device != "cpu":
        return
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState()
    if state.distributed_type == DistributedType.MULTI_CPU:
        state.distributed_type = DistributedType.MULTI_GPU


def set_threads(plan: Plan) -> None:
    import torch

    if plan.device == "cpu" and plan.threads:
        torch.set_num_threads(plan.threads)


def make_callback(on_metrics: Callable[[int, int, dict[str, float]], None],
                  should_stop: Callable[[], bool], on_save: Callable[[int], None]):
    """A TrainerCallback that reports metrics, stops when asked (saving that step), and notes checkpoints.
    `should_stop` is asked at every step's end, on every rank of a job on several processes (it
    throttles its own look-ups and gives every rank rank 0's answer: Recipe.should_stop)."""
    from transformers import TrainerCallback

    class JobCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                clean = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                on_metrics(state.global_step, state.max_steps, clean)

        def on_step_end(self, args, state, control, **kwargs):
            if should_stop():   # stopped on request (cancel, the API's pause): this step is kept as a
                control.should_training_stop = True   # checkpoint, so a resumed job goes on from it
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            on_save(state.global_step)

    return JobCallback()


def quiet(trainer) -> None:
    """Metrics go to job events; drop transformers' stdout printer of log dicts."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


LOW_DISK_BYTES = 32 * 1024 * 1024


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error` came from a full disk: ENOSPC, or (torch.save reports it as a RuntimeError of
    its zip writer) a failure while the folder's filesystem has almost no space left."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint (Trainer writes trainer_state.json after the weights, the
    optimizer and the RNG state); incomplete ones (a full disk or a kill mid-save) are removed so
    that nothing resumes from them or later mistakes them for complete."""
    if not output_dir.is_dir():
        return None
    found = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit())
    complete = [p for _, p in found if (p / "trainer_state.json").is_file()]
    for _, p in found:
        if p not in complete:
            shutil.rmtree(p, ignore_errors=True)
    return str(complete[-1]) if complete else None


def load_staged(path: Path, cache_dir: Path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache_dir))


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def save_output(trainer, tokenizer, out_dir: Path, lora: bool) -> str:
    """Write a PEFT adapter folder (LoRA) or a full model folder; return the output type. Under FSDP
    every rank calls this (the full state dict is gathered from all of them) and rank 0 writes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.save_model(str(out_dir))   # gathers the full state dict (FULL_STATE_DICT), writes on rank 0
        if not trainer.args.should_save:   # the other ranks only gave their shards
            return "adapter" if lora else "full-model"
        (out_dir / "training_args.bin").unlink(missing_ok=True)
    else:
        trainer.model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return "adapter" if lora else "full-model"


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    import tuneloop

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__, "tuneloop": tuneloop.__version__}


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
