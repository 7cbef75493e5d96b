"""python bench/train_throughput.py [--technique sft|dpo|both] [--samples 96] [--repeats 3]

Training throughput: tuneloop's planned run vs a plain TRL script with TRL's default config
(SFTConfig / DPOConfig defaults plus use_cpu=True), on the ~25M built-in model
(tuneloop/small-qwen3), the same mixed-length data, the same number of samples, the same LoRA
adapter and learning rate. Each run is a fresh subprocess (so peak RSS is its own); runs
alternate A/B and the medians and ratios are printed. Baseline: "trl-defaults".
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

MODEL = "tuneloop/small-qwen3"
WORDS = ("the model learns to answer questions about data training evaluation serving adapters and "
         "preferences with short and long sentences that vary a lot in length so padding matters").split()


def make_data(technique: str, n: int, path: Path, seed: int = 0) -> None:
    """Mixed-length rows: 4 to 160 words per field, fixed seed."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    with open(path, "w") as f:
        for _ in range(n):
            if technique == "sft":
                row = {"prompt": text(4, 40), "completion": text(4, 160)}
            else:
                row = {"prompt": text(4, 40), "chosen": text(4, 100), "rejected": text(4, 100)}
            f.write(json.dumps(row) + "\n")


def _dataset_tokens(data: Path, technique: str, tokenizer) -> int:
    from tuneloop.data.staged import iter_rows

    total = 0
    for row in iter_rows(data):
        parts = [row["prompt"], row["completion"]] if technique == "sft" else \
            [row["prompt"], row["chosen"], row["prompt"], row["rejected"]]
        total += sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in parts)
    return total


def run_one(kind: str, technique: str, data: Path, samples: int, work: Path) -> dict:
    """One training run in this process; returns tokens/s and peak RSS."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.data.lengths import token_stats
    from tuneloop.models.resolve import resolve
    from tuneloop.models.shape import model_shape
    from tuneloop.service.models import model_defaults
    from tuneloop.training import common
    from tuneloop.training.plan import detect_hardware, make_plan

    model_dir = ensure_builtin(MODEL, Path(os.environ.get("TUNELOOP_MODELS_DIR", Path.home() / ".tuneloop/models")))
    resolved = resolve(MODEL, technique=technique, training_type="lora")
    defaults = model_defaults(resolved, technique, "lora")
    plan = make_plan(technique=technique, training_type="lora", shape=model_shape(model_dir, 0),
                     data=token_stats(data, technique, model_dir), hw=detect_hardware(), defaults=defaults,
                     overrides={"max_steps": samples // defaults["global_batch_size"]})
    if os.environ.get("BENCH_PLAN"):  # experiments: override plan fields, e.g. {"per_device_batch": 4}
        for k, v in json.loads(os.environ["BENCH_PLAN"]).items():
            setattr(plan, k, v)
    if kind == "tuneloop":
        from tuneloop.training.recipes import dpo, sft

        build = {"sft": sft.build_trainer, "dpo": dpo.build_trainer}[technique]
        trainer, tokenizer = build(model_dir=str(model_dir), data_path=data, work_dir=work, plan=plan, lora=True,
                                   target_modules=resolved.lora_targets, callbacks=[])
    else:  # a plain TRL script: the technique's config with its defaults, use_cpu=True, same LoRA and steps
        from datasets import load_dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        ds = load_dataset("json", data_files=str(data), split="train", cache_dir=str(work / "cache"))
        if technique == "sft":
            from trl import SFTConfig as Config, SFTTrainer as Trainer
            ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "completion": [{"role": "assistant", "content": r["completion"]}]})
        else:
            from trl import DPOConfig as Config, DPOTrainer as Trainer
            ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                   "rejected": [{"role": "assistant", "content": r["rejected"]}]})
        config = Config(output_dir=str(work / "out"), use_cpu=True, max_steps=plan.total_steps,
                        learning_rate=plan.learning_rate, report_to=[], save_strategy="no", disable_tqdm=True)
        trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config, train_dataset=ds,
                          processing_class=tokenizer,
                          peft_config=LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_alpha, task_type="CAUSAL_LM",
                                                 target_modules=resolved.lora_targets))
        common.quiet(trainer)
    batch = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    steps = trainer.args.max_steps
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    n_samples = batch * steps
    tokens = _dataset_tokens(data, technique, tokenizer) * n_samples / sum(1 for _ in open(data))
    return {"kind": kind, "technique": technique, "samples": n_samples, "steps": steps, "seconds": elapsed,
            "samples_per_s": n_samples / elapsed, "tokens_per_s": tokens / elapsed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "bf16": bool(trainer.args.bf16), "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
            "per_device_batch": trainer.args.per_device_train_batch_size,
            "sampling": getattr(trainer.args, "train_sampling_strategy", "random")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--technique", default="both", choices=["sft", "dpo", "both"])
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "TECHNIQUE", "DATA"))
    args = ap.parse_args()
    if args.child:
        kind, technique, data = args.child
        with tempfile.TemporaryDirectory() as work:
            print("RESULT " + json.dumps(run_one(kind, technique, Path(data), args.samples, Path(work))))
        return
    techniques = ["sft", "dpo"] if args.technique == "both" else [args.technique]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for technique in techniques:
            data = Path(tmp) / f"{technique}.jsonl"
            make_data(technique, 256, data)
            runs: dict[str, list[dict]] = {"trl-defaults": [], "tuneloop": []}
            for i in range(args.repeats):
                for kind in (("trl-defaults", "tuneloop") if i % 2 == 0 else ("tuneloop", "trl-defaults")):
                    out = subprocess.run([sys.executable, __file__, "--samples", str(args.samples), "--child", kind,
                                          technique, str(data)], capture_output=True, text=True)
                    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
                    if line is None:
                        sys.exit(f"{kind} {technique} failed:\n{out.stderr[-3000:]}")
                    result = json.loads(line[7:])
                    runs[kind].append(result)
                    print(f"  {technique} {kind:<13} {result['tokens_per_s']:8.0f} tok/s  "
                          f"{result['peak_rss_mb']:6.0f} MB  bf16={result['bf16']} "
                          f"ckpt={result['gradient_checkpointing']} batch={result['per_device_batch']} "
                          f"sampling={result['sampling']}", flush=True)
            med = {k: {m: statistics.median(r[m] for r in v) for m in ("tokens_per_s", "peak_rss_mb", "samples_per_s")}
                   for k, v in runs.items()}
            ratio = med["tuneloop"]["tokens_per_s"] / med["trl-defaults"]["tokens_per_s"]
            mem = med["tuneloop"]["peak_rss_mb"] / med["trl-defaults"]["peak_rss_mb"]
            report[technique] = {"median": med, "speedup": ratio, "rss_ratio": mem}
            print(f"{technique}: tuneloop {med['tuneloop']['tokens_per_s']:.0f} tok/s vs trl-defaults "
                  f"{med['trl-defaults']['tokens_per_s']:.0f} tok/s -> {ratio:.2f}x; peak RSS "
                  f"{med['tuneloop']['peak_rss_mb']:.0f} MB vs {med['trl-defaults']['peak_rss_mb']:.0f} MB "
                  f"({mem:.2f}x)", flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
