"""python bench/rl_throughput.py [--model tuneloop/small-qwen3] [--prompts 16] [--completion 64] [--repeats 3]

RL step throughput: tuneloop's planned GRPO vs a plain TRL script with TRL's default GRPOConfig
(plus use_cpu=True), on the same built-in model, the same prompts, the same reward (an exact-match
function), the same LoRA adapter and learning rate, and the same work: num_generations 8 (TRL's
default), the same completion length (`--completion`; the random-weight model rarely stops early,
so both generate about that many tokens) and no KL term (TRL's default beta=0; tuneloop is run with
kl_loss_coef 0 so both do the same work). What differs is what tuneloop's planner decides: fp32
instead of bf16 autocast on a CPU, no gradient checkpointing, the per-device batch (whole groups,
from the token budget), the generation batch (TRL: per_device_train_batch_size x
gradient_accumulation_steps completions per rollout) and the CPU thread count. Each run is a fresh
subprocess; runs alternate A/B; medians and the ratio are printed. Baseline: "trl-defaults".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the model learns to answer questions about data training evaluation serving adapters and "
         "preferences with short and long sentences that vary in length").split()


def make_prompts(n: int, path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30)))
            f.write(json.dumps({"prompt": [{"role": "user", "content": text}], "answer": rng.choice(WORDS),
                                "reward_model": "builtin:exact_match"}) + "\n")


def exact_match(prompts, completions, answer, **kwargs):
    return [float(c[0]["content"].strip() == a) for c, a in zip(completions, answer)]


def run_one(kind: str, model: str, data: Path, prompts: int, completion: int, work: Path) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.data.lengths import token_stats
    from tuneloop.models.resolve import resolve
    from tuneloop.models.shape import model_shape
    from tuneloop.service.models import model_defaults
    from tuneloop.training.plan import detect_hardware, make_plan

    model_dir = ensure_builtin(model, Path(os.environ.get("TUNELOOP_MODELS_DIR", Path.home() / ".tuneloop/models")))
    resolved = resolve(model, technique="rlvr", training_type="lora")
    defaults = model_defaults(resolved, "rlvr", "lora")
    gens = 8
    completions = prompts * gens
    plan = make_plan(technique="rlvr", training_type="lora", shape=model_shape(model_dir, 0),
                     data=token_stats(data, "rlvr", model_dir), hw=detect_hardware(), defaults=defaults,
                     overrides={"num_generations": gens, "max_response_length": completion, "kl_loss_coef": 0.0,
                                "max_steps": max(1, completions // defaults["global_batch_size"])})
    if os.environ.get("BENCH_PLAN"):  # experiments: override plan fields, e.g. {"threads": 2}
        for k, v in json.loads(os.environ["BENCH_PLAN"]).items():
            setattr(plan, k, v)
    if kind == "tuneloop":
        from tuneloop.rewards.engine import RewardEngine
        from tuneloop.rewards.functions import RewardContext
        from tuneloop.training.recipes import grpo

        ctx = RewardContext()
        trainer, _ = grpo.build_trainer(model_dir=str(model_dir), data_path=data, work_dir=work, plan=plan, lora=True,
                                        target_modules=resolved.lora_targets, callbacks=[],
                                        engine=RewardEngine(ctx, "builtin:exact_match"))
    else:  # a plain TRL script: GRPOConfig defaults, use_cpu=True, the same LoRA, length and samples
        from datasets import load_dataset
        from peft import LoraConfig
        from trl import GRPOConfig, GRPOTrainer

        from tuneloop.training import common

        ds = load_dataset("json", data_files=str(data), split="train", cache_dir=str(work / "cache"))
        config = GRPOConfig(output_dir=str(work / "out"), use_cpu=True, max_completion_length=completion,
                            learning_rate=plan.learning_rate, report_to=[], save_strategy="no", disable_tqdm=True)
        config.max_steps = completions // (config.per_device_train_batch_size * config.gradient_accumulation_steps)
        trainer = GRPOTrainer(model=str(model_dir), reward_funcs=exact_match, args=config, train_dataset=ds,
                              peft_config=LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_alpha, task_type="CAUSAL_LM",
                                                     target_modules=resolved.lora_targets))
        common.quiet(trainer)
    args = trainer.args
    n = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.max_steps
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    import torch

    return {"kind": kind, "samples": n, "steps": args.max_steps, "seconds": elapsed, "samples_per_s": n / elapsed,
            "mean_completion_tokens": statistics.mean(lengths) if lengths else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bf16": bool(args.bf16),
            "gradient_checkpointing": bool(args.gradient_checkpointing),
            "per_device_batch": args.per_device_train_batch_size, "generation_batch": args.generation_batch_size,
            "num_generations": args.num_generations, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tuneloop/small-qwen3")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per run (x 8 completions)")
    ap.add_argument("--completion", type=int, default=64, help="max completion tokens (both)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DATA"))
    args = ap.parse_args()
    if args.child:
        kind, data = args.child
        with tempfile.TemporaryDirectory() as work:
            print("RESULT " + json.dumps(run_one(kind, args.model, Path(data), args.prompts, args.completion,
                                                 Path(work))))
        return
    runs: dict[str, list[dict]] = {"trl-defaults": [], "tuneloop": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        make_prompts(args.prompts, data)
        for i in range(args.repeats):
            for kind in (("trl-defaults", "tuneloop") if i % 2 == 0 else ("tuneloop", "trl-defaults")):
                out = subprocess.run([sys.executable, __file__, "--model", args.model, "--prompts", str(args.prompts),
                                      "--completion", str(args.completion), "--child", kind, str(data)],
                                     capture_output=True, text=True)
                line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{kind} failed:\n{out.stderr[-3000:]}")
                r = json.loads(line[7:])
                runs[kind].append(r)
                print(f"  {kind:<13} {r['samples_per_s']:7.2f} samples/s  {r['samples']} completions in "
                      f"{r['seconds']:.1f} s ({r['steps']} steps, mean {r['mean_completion_tokens']:.0f} tokens)  "
                      f"bf16={r['bf16']} ckpt={r['gradient_checkpointing']} batch={r['per_device_batch']} "
                      f"gen_batch={r['generation_batch']} threads={r['threads']} rss={r['peak_rss_mb']:.0f} MB",
                      flush=True)
    med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
    ratio = med["tuneloop"] / med["trl-defaults"]
    print(f"RL step throughput on {args.model}: tuneloop {med['tuneloop']:.2f} samples/s vs trl-defaults "
          f"{med['trl-defaults']:.2f} samples/s -> {ratio:.2f}x (medians of {args.repeats})")
    print(json.dumps({"median_samples_per_s": med, "speedup": ratio,
                      "load_average": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
