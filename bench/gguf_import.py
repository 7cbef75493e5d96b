"""python bench/gguf_import.py [--gguf FILE.gguf] [--repeats 3] [--rows 16] [--out FILE.json]

Full run (an idle 2-core machine, ~7 minutes): `python bench/gguf_import.py --repeats 3`
Smoke test (~3 minutes): `python bench/gguf_import.py --repeats 1 --rows 8`

GGUF import: seconds from `tuneloop tune --technique sft --model X.gguf --dataset D --max-steps 1`
(a fresh subprocess, as a user types it) to the end of the first training step,
  first:  with an empty models dir (the resolver hashes the file, dequantizes it once into
          <models_dir>/gguf/<sha256>/ as safetensors, then the job loads that folder);
  cached: the same models dir again (a fresh TUNELOOP_HOME, so it is a new job, not the old one);
vs the baseline "from_pretrained(gguf_file)": what a user would otherwise do every time, a plain
Python script (fresh subprocess) that loads the model and tokenizer with
`AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)` (dequantizing every time) and runs a
plain TRL `SFTTrainer` with the same LoRA and the same batch layout as tuneloop's plan for the
first step (read from the first job's plan), on the same rows. (Trainer refuses a model loaded
from a GGUF, "QuantizationMethod.GGUF ... do not support training", though its weights are
dequantized: the baseline drops that mark, `model.hf_quantizer, model.is_quantized = None, False`,
the workaround a user has to find.)

tuneloop's times come from its store: the job's creation (staging, resolving, converting, planning
done in the CLI), "training started" (the runner has claimed the job and built the trainer) and the
first step's metrics event, all against the wall clock at launch. Medians over --repeats; each
repeat runs first, then cached and the baseline in alternating order. The load average is
recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_grid import DEFAULT_GGUF, make_rows  # noqa: E402  (the same realistic chat rows)


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def run_tuneloop(gguf: Path, data: Path, home: Path, models_dir: Path) -> dict:
    """One `tuneloop tune` as a user types it; the phase times from its store, from launch."""
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "tuneloop", "tune", "--technique", "sft", "--model", str(gguf),
                          "--dataset", str(data), "--max-steps", "1", "--json"],
                         capture_output=True, text=True, env=env, cwd=data.parent)
    total = time.time() - t0
    if out.returncode != 0:
        sys.exit(f"tuneloop tune failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    db = sqlite3.connect(home / "tuneloop.db")
    job_id, created, started, plan = db.execute("SELECT id, created_at, started_at, plan FROM jobs").fetchone()
    events = db.execute("SELECT created_at, type, message FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    db.close()
    train_start = next(_utc(t) for t, _, m in events if m.startswith("training started"))
    first_step = next(_utc(t) for t, kind, _ in events if kind == "metrics")
    plan = json.loads(plan)
    return {"to_job": _utc(created) - t0, "to_runner": _utc(started) - t0, "to_training": train_start - t0,
            "to_first_step": first_step - t0, "first_step_s": first_step - train_start, "command_s": total,
            "plan": {k: plan[k] for k in ("per_device_batch", "grad_accum", "precision", "gradient_checkpointing",
                                          "group_by_length", "threads", "lora_rank", "lora_alpha", "learning_rate",
                                          "max_length")}}


def run_baseline(gguf: Path, data: Path, plan: dict) -> dict:
    """The plain script, in a fresh subprocess; its marks (wall clock) against the launch."""
    t0 = time.time()
    out = subprocess.run([sys.executable, __file__, "--gguf", str(gguf), "--child", json.dumps(plan), str(data)],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"baseline failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    marks = json.loads(line[7:])
    return {"to_loaded": marks["loaded"] - t0, "to_training": marks["training"] - t0,
            "to_first_step": marks["step"] - t0, "first_step_s": marks["step"] - marks["training"],
            "load_s": marks["loaded"] - marks["imported"]}


def baseline_child(gguf: Path, data: Path, plan: dict) -> dict:
    """What a user would write: from_pretrained(gguf_file=...) every time, then a plain SFTTrainer."""
    marks = {}
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    marks["imported"] = time.time()
    torch.set_num_threads(plan["threads"])
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    marks["loaded"] = time.time()
    # transformers marks a GGUF-loaded model as quantized (its GGUF quantizer) and Trainer refuses to train
    # it ("QuantizationMethod.GGUF ... do not support training"), though its weights are dequantized
    # already: the user's workaround is to drop the mark
    model.hf_quantizer, model.is_quantized = None, False
    del model.config.quantization_config
    model.config.use_cache = False
    ds = load_dataset("json", data_files=str(data), split="train")
    ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                           "completion": [{"role": "assistant", "content": r["completion"]}]})

    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks["training"] = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            marks.setdefault("step", time.time())

    with tempfile.TemporaryDirectory() as work:
        args = SFTConfig(output_dir=work, use_cpu=True, max_steps=1, per_device_train_batch_size=plan["per_device_batch"],
                         gradient_accumulation_steps=plan["grad_accum"], learning_rate=plan["learning_rate"],
                         bf16=plan["precision"] == "bf16", gradient_checkpointing=plan["gradient_checkpointing"],
                         train_sampling_strategy="group_by_length" if plan["group_by_length"] else "random",
                         max_length=plan["max_length"], report_to=[], save_strategy="no", disable_tqdm=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                             peft_config=LoraConfig(r=plan["lora_rank"], lora_alpha=plan["lora_alpha"],
                                                    task_type="CAUSAL_LM", target_modules="all-linear"),
                             callbacks=[Marks()])
        trainer.train()
    return marks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=str(DEFAULT_GGUF))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=16, help="training rows (the first step trains on 8 of them)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--child", nargs=2, metavar=("PLAN", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    gguf = Path(args.gguf).expanduser().resolve()
    if args.child:
        print("RESULT " + json.dumps(baseline_child(gguf, Path(args.child[1]), json.loads(args.child[0]))))
        return
    load_start = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: load average {load_start}; {gguf.name} "
          f"({gguf.stat().st_size / 2**20:.0f} MiB)", flush=True)
    runs: dict[str, list[dict]] = {"first": [], "cached": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows)))
        for i in range(args.repeats):
            models = tmp / f"models-{i}"   # empty: the first job converts
            runs["first"].append(run_tuneloop(gguf, data, tmp / f"home-{i}-first", models))
            plan = runs["first"][-1]["plan"]
            for kind in (("cached", "baseline") if i % 2 == 0 else ("baseline", "cached")):
                r = run_tuneloop(gguf, data, tmp / f"home-{i}-cached", models) if kind == "cached" else \
                    run_baseline(gguf, data, plan)
                runs[kind].append(r)
            for kind in runs:
                r = runs[kind][-1]
                print(f"  [{i + 1}/{args.repeats}] {kind:<9} first step done at {r['to_first_step']:5.1f} s "
                      f"(training started at {r['to_training']:5.1f} s, the step itself {r['first_step_s']:4.1f} s)",
                      flush=True)
    load_end = os.getloadavg()
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0] if m != "plan"} for k, v in runs.items()}
    plan = runs["first"][0]["plan"]
    print(f"\nplan of the first step: {plan['per_device_batch']} x {plan['grad_accum']} ({plan['precision']}, "
          f"{plan['threads']} threads); load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end\n")
    print("| run | to the first step's end (median; runs) | of which: to training start | the first step | ratio |")
    print("|---|---|---|---|---|")
    base = med["baseline"]["to_first_step"]
    for kind, label in (("baseline", "baseline: `from_pretrained(gguf_file=...)` + TRL, every time"),
                        ("first", "`tuneloop tune --model X.gguf`, first time (converts)"),
                        ("cached", "`tuneloop tune --model X.gguf`, cached")):
        m = med[kind]
        each = ", ".join(f"{r['to_first_step']:.1f}" for r in runs[kind])
        print(f"| {label} | {m['to_first_step']:.1f} s ({each}) "
              f"| {m['to_training']:.1f} s | {m['first_step_s']:.1f} s | {m['to_first_step'] / base:.2f}x |")
    f, c = med["first"], med["cached"]
    print(f"\ntuneloop phases (median, seconds from launch): first: job created {f['to_job']:.1f} (staging, hashing, "
          f"converting, planning in the CLI), runner {f['to_runner']:.1f}, training {f['to_training']:.1f}; cached: "
          f"job created {c['to_job']:.1f}, runner {c['to_runner']:.1f}, training {c['to_training']:.1f}. "
          f"Baseline: from_pretrained(gguf_file) {med['baseline']['load_s']:.1f} s after its imports.")
    if args.out:
        Path(args.out).write_text(json.dumps({"median": med, "runs": runs, "load_start": load_start,
                                              "load_end": load_end}, indent=2))


if __name__ == "__main__":
    main()
