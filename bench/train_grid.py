"""python bench/train_grid.py [--model GGUF_OR_FOLDER] [--grid batch|knobs|full] [--steps 2] [--repeats 2]
                            [--precisions fp32,bf16] [--batches 1,2,4,8] [--threads 1,2] [--checkpointing off,on]
                            [--group-by-length off,on] [--at-batch 2] [--plan-variant JSON ...] [--out FILE.json]

Full runs, one after the other on an idle machine (~11 and ~12 minutes on 2 cores; a run is ~30 s):
    python bench/train_grid.py --grid batch --out /tmp/grid-batch.json
    python bench/train_grid.py --grid knobs --at-batch B --out /tmp/grid-knobs.json   # B: the best batch above
Smoke test (about a minute; numbers meaningless):
    python bench/train_grid.py --precisions fp32 --batches 4 --global-batch 4 --steps 2 --repeats 1 --plan-variant none

LoRA SFT tokens/s on a real pretrained model (default: SmolLM2-135M-Instruct from its cached Q4_1
GGUF, converted once by tuneloop's resolver into --models-dir and reused): tuneloop's plan, run
through tuneloop's own training path (the planner's `make_plan` on the data's token stats and this
machine's hardware, then `training.recipes.sft.build_trainer`), vs a grid of hand-tuned plain TRL
`SFTTrainer` configurations: precision (fp32; bf16 = TRL's `bf16=True`, autocast over fp32 weights),
bf16w = bf16 weights for the frozen base as well (what tuneloop's `load_model` does for a bf16 LoRA
plan), per-device batch with accumulation to the same global batch, torch threads, gradient checkpointing.
Baseline: the fastest TRL configuration of the grid ("best TRL").

Every run is a fresh subprocess on the same rows (global batch x steps realistic mixed-length chat
rows, so each run trains on exactly these rows once, in its own order), the same LoRA (tuneloop's
plan's rank, alpha and targets for this model) and the same learning rate; runs are alternated (the
order reverses every repeat) and medians over --repeats are reported. Tokens are counted as the
trainer sees them (attention-mask ones of every micro-batch; padding is not counted), and the rate
is the steady state: the first optimizer step (oneDNN primitive creation, allocator warm-up) is
timed separately and left out (its own column; "incl. first step" is the rate over the whole run).
With the default 2 steps the steady rate is one optimizer step of 8 rows (~1,300 tokens, ~10 s):
what fits 10+ configurations x 2 repeats in ~11 minutes; --steps 4 halves its noise at 1.6x the time.

MFU: model FLOPs per token are the usual 6 N (2 N forward + 4 N backward), N = the parameters of
every matmul of the frozen base (the tied embedding counted once, as the output layer; attention
scores not counted), divided by this machine's matmul rate measured here, at the run's thread count,
with a large fp32 (and bf16) `torch.matmul` loop at the start and the end of the bench (the better
of the two). LoRA does less than 6 N: the frozen base needs no weight gradients (about 4 N), so the
MFU at 6 N flatters LoRA by up to 1.5x; the column says what the standard definition says.
The load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import itertools
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

DEFAULT_GGUF = Path.home() / ".cache/tuneloop/real-models/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODELS_DIR = Path.home() / ".cache/tuneloop/bench-models"

# realistic chat rows: questions and answers made of ordinary English sentences, mixed lengths
TOPICS = ["photosynthesis", "the French revolution", "binary search", "compound interest", "volcanoes",
          "the immune system", "sourdough bread", "electric cars", "the stock market", "jazz music",
          "black holes", "climate change", "the Roman empire", "machine learning", "coffee brewing",
          "the water cycle", "chess openings", "solar panels", "sleep", "the printing press"]
ASKS = ["Can you explain {t} in simple terms?", "What is the most important thing to know about {t}?",
        "I have an exam tomorrow. Summarize {t} for me, please.", "Why does {t} matter?",
        "Write a short paragraph about {t} for a ten-year-old.", "What are common misconceptions about {t}?",
        "My friend says {t} is overrated. How would you answer that, with two or three concrete examples?",
        "Give me a step by step introduction to {t}, starting from the basics and ending with one "
        "practical tip I can use this week."]
SENTENCES = [
    "It is easiest to start with the basic idea and then add the details one at a time.",
    "Most people learn this best by looking at a concrete example first.",
    "The key point is that small changes add up over a long period of time.",
    "Scientists have studied this for more than a century, and the core findings still hold.",
    "There are three parts to it: what goes in, what happens in the middle, and what comes out.",
    "A common mistake is to confuse the cause with the effect.",
    "In practice, the details depend on the conditions, such as temperature, time and scale.",
    "Historians still debate some of the reasons, but the broad story is well understood.",
    "If you want to go deeper, a good textbook or a museum visit will help a lot.",
    "You can try a simple experiment at home to see the effect for yourself.",
    "The numbers can look surprising at first, so it helps to write them down.",
    "This is also why the topic shows up so often in the news.",
    "Think of it like a recipe: the order of the steps matters as much as the ingredients.",
    "Engineers use the same principle when they design bridges, engines and computers.",
    "To sum up, it is a simple idea with many important consequences.",
    "Remember that experts disagree about the edge cases, not about the main facts.",
]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n {prompt, completion} rows: a one-sentence question and 1 to 12 answer sentences, fixed seed."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = rng.choice(ASKS).format(t=rng.choice(TOPICS))
        k = rng.choice([1, 2, 3, 4, 6, 8, 12])
        rows.append({"prompt": prompt, "completion": " ".join(rng.choice(SENTENCES) for _ in range(k))})
    return rows


# ---- the child: one run in this process -------------------------------------------------------------

def _plan(model_ref, model_dir: Path, data: Path, steps: int, global_batch: int, override: dict | None):
    from tuneloop.data.lengths import token_stats
    from tuneloop.models.shape import model_shape
    from tuneloop.service.models import model_defaults
    from tuneloop.training.plan import detect_hardware, make_plan

    plan = make_plan(technique="sft", training_type="lora", shape=model_shape(model_dir, 0, gguf=model_ref.gguf),
                     data=token_stats(data, "sft", model_dir), hw=detect_hardware(),
                     defaults=model_defaults(model_ref, "sft", "lora"),
                     overrides={"max_steps": steps, "global_batch_size": global_batch})
    for k, v in (override or {}).items():   # a variant of the plan, e.g. {"precision": "bf16"}
        setattr(plan, k, v)
    return plan


def run_child(cfg: dict, data: Path, model: str, models_dir: Path, steps: int, global_batch: int, work: Path) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import TrainerCallback

    from tuneloop.models.resolve import resolve
    from tuneloop.training import common

    ref = resolve(model, use="tune", technique="sft", training_type="lora", models_dir=models_dir)
    model_dir = Path(ref.load_path())
    plan = _plan(ref, model_dir, data, steps, global_batch, cfg.get("override"))
    if cfg["kind"] == "tuneloop":
        from tuneloop.training.recipes import sft

        trainer, _ = sft.build_trainer(model_dir=str(model_dir), data_path=data, work_dir=work, plan=plan, lora=True,
                                       target_modules=ref.lora_targets, callbacks=[])
    else:  # a plain TRL script, tuned by hand: the grid's precision, batch, threads and checkpointing
        from datasets import load_dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        torch.set_num_threads(cfg["threads"])
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        ds = load_dataset("json", data_files=str(data), split="train", cache_dir=str(work / "cache"))
        ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                               "completion": [{"role": "assistant", "content": r["completion"]}]})
        base = AutoModelForCausalLM.from_pretrained(  # bf16w: the frozen base in bf16 too, as tuneloop loads it
            model_dir, dtype=torch.bfloat16 if cfg["precision"] == "bf16w" else torch.float32)
        base.config.use_cache = False
        args = SFTConfig(output_dir=str(work / "out"), use_cpu=True, max_steps=steps,
                         per_device_train_batch_size=cfg["batch"], gradient_accumulation_steps=global_batch // cfg["batch"],
                         learning_rate=plan.learning_rate, bf16=cfg["precision"] != "fp32",
                         gradient_checkpointing=cfg["checkpointing"], report_to=[], save_strategy="no",
                         disable_tqdm=True, logging_steps=1, dataloader_num_workers=0, max_length=plan.max_length,
                         train_sampling_strategy="group_by_length" if cfg.get("by_length") else "random")
        trainer = SFTTrainer(model=base, args=args, train_dataset=ds, processing_class=tokenizer,
                             peft_config=LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_alpha, lora_dropout=0.0,
                                                    task_type="CAUSAL_LM",
                                                    target_modules=ref.lora_targets or common.GENERIC_LORA_TARGETS))
        common.quiet(trainer)

    seen = {"tokens": 0, "padded": 0}
    inner = trainer.training_step

    def counted(model, inputs, *a, **kw):   # the tokens this micro-batch trains on, as the trainer sees them
        mask = inputs.get("attention_mask")
        seen["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        seen["padded"] += inputs["input_ids"].numel()
        return inner(model, inputs, *a, **kw)

    trainer.training_step = counted
    marks: list[tuple[float, int]] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), seen["tokens"]))

    trainer.add_callback(Timer())
    net = trainer.model
    emb = net.get_input_embeddings().weight
    out = net.get_output_embeddings()
    tied = out is not None and out.weight is emb
    base_params = sum(p.numel() for n, p in net.named_parameters() if "lora_" not in n)
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    first_s, first_tokens = marks[0][0] - start, marks[0][1]
    steady_s = marks[-1][0] - marks[0][0]
    steady_tokens = marks[-1][1] - marks[0][1]
    a = trainer.args
    return {"label": cfg["label"], "kind": cfg["kind"], "steps": len(marks), "tokens": seen["tokens"],
            "padded_tokens": seen["padded"], "seconds": total, "tokens_per_s_all": seen["tokens"] / total,
            "first_step_s": first_s, "first_step_tokens": first_tokens,
            "tokens_per_s": steady_tokens / steady_s if steady_s > 0 else seen["tokens"] / total,
            "step_s": [round(b[0] - a_[0], 3) for a_, b in zip([(start, 0)] + marks, marks)],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "precision": "bf16" if a.bf16 else "fp32",
            "weights": str(next(p for n, p in net.named_parameters() if "lora_" not in n).dtype).replace("torch.", ""),
            "per_device_batch": a.per_device_train_batch_size, "grad_accum": a.gradient_accumulation_steps,
            "checkpointing": bool(a.gradient_checkpointing), "threads": torch.get_num_threads(),
            "sampling": getattr(a, "train_sampling_strategy", "random"),
            "matmul_params": base_params - (0 if tied else emb.numel()), "tied_embeddings": tied}


def matmul_child(threads: int, dtype: str, n: int = 2048, seconds: float = 2.0) -> dict:
    """FLOP/s of a large square matmul at `threads` threads: best of 3 timed windows of ~seconds/3."""
    import torch

    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    for _ in range(2):
        torch.matmul(a, b)
    best = 0.0
    for _ in range(3):
        iters, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            torch.matmul(a, b)
            iters += 1
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - t0))
    return {"threads": threads, "dtype": dtype, "n": n, "flops": best}


def prepare_child(model: str, models_dir: Path) -> dict:
    """Convert the model once (a GGUF: into models_dir/gguf/<sha256>/, reused afterwards)."""
    from tuneloop.models.resolve import resolve

    t0 = time.perf_counter()
    path = resolve(model, use="tune", technique="sft", training_type="lora", models_dir=models_dir).load_path()
    return {"folder": path, "seconds": time.perf_counter() - t0}


# ---- the parent: data, configurations, alternation, report ------------------------------------------

def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"child {args[:2]} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(line[7:])


def configurations(args) -> list[dict]:
    """tuneloop's plan (and its --plan-variant rows), then the TRL grid of --grid:
    batch: precision x per-device batch, at the most threads, no checkpointing, random order;
    knobs: at per-device batch --at-batch, each precision with one knob changed (1 thread, checkpointing
           on, length-grouped batches), plus TRL's own default layout (bf16, batch 8, checkpointing);
    full:  the whole product of precisions x batches x threads x checkpointing x sampling."""
    precisions = args.precisions.split(",")
    batches = [int(b) for b in args.batches.split(",") if args.global_batch % int(b) == 0]
    threads = [int(t) for t in args.threads.split(",")]
    ckpts = [c == "on" for c in args.checkpointing.split(",")]
    lengths = [c == "on" for c in args.group_by_length.split(",")]
    top = max(threads)
    if args.grid == "full":
        points = list(itertools.product(precisions, batches, threads, ckpts, lengths))
    elif args.grid == "batch":
        points = [(p, b, top, False, False) for p, b in itertools.product(precisions, batches)]
    else:
        b = args.at_batch
        points = [(p, b, top, False, False) for p in precisions]
        for p in precisions:
            points += [(p, b, t, False, False) for t in threads if t != top]
            points += [(p, b, top, True, False), (p, b, top, False, True)]
        points.append(("bf16", min(8, args.global_batch), top, True, False))
    variants = [] if args.plan_variant == ["none"] else (args.plan_variant or ['{"precision": "bf16"}'])
    cfgs = [{"kind": "tuneloop", "label": "tuneloop plan"}]
    cfgs += [{"kind": "tuneloop", "label": f"tuneloop plan + {v}", "override": json.loads(v)} for v in variants]
    for point in dict.fromkeys(points):
        p, b, t, c, g = point
        cfgs.append({"kind": "trl", "precision": p, "batch": b, "threads": t, "checkpointing": c, "by_length": g,
                     "label": f"TRL {p} b{b}x{args.global_batch // b} t{t}" + (" ckpt" if c else "")
                              + (" by-length" if g else "")})
    return cfgs


def _fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def report(runs: dict[str, list[dict]], cfgs: list[dict], rates: dict, args, load: tuple, n_tokens: str) -> dict:
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    trl = [c["label"] for c in cfgs if c["kind"] == "trl"]
    best = max(trl, key=med.get) if trl else None
    first = {k: v[0] for k, v in runs.items()}
    print(f"\n{n_tokens}; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")
    print("matmul rates (GFLOP/s, best of start and end): " + ", ".join(
        f"{d} t{t} {r / 1e9:.0f}" for (t, d), r in sorted(rates.items())))
    counts = sorted({r["tokens"] for v in runs.values() for r in v})
    if len(counts) > 1:
        print(f"WARNING: the runs trained on different token counts {counts}: the chat rendering differs")
    print("\n| run | precision (weights) | per-device batch x accum | threads | checkpointing | tokens/s (median; runs) "
          "| vs best TRL | incl. first step | first step | MFU (6N / fp32 matmul) | MFU vs bf16 matmul | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = {}
    for c in cfgs:
        k = c["label"]
        r = first[k]
        n6 = 6 * r["matmul_params"] * med[k]
        mfu = n6 / rates[(r["threads"], "fp32")]
        mfu_bf16 = n6 / rates[(r["threads"], "bf16")] if r["precision"] == "bf16" and (r["threads"], "bf16") in rates else None
        ratio = med[k] / med[best] if best else float("nan")
        rows[k] = {"tokens_per_s": med[k], "runs": [x["tokens_per_s"] for x in runs[k]], "ratio_to_best_trl": ratio,
                   "tokens_per_s_all": statistics.median(x["tokens_per_s_all"] for x in runs[k]), "mfu_fp32": mfu, "mfu_bf16": mfu_bf16, "first_step_s": statistics.median(x["first_step_s"] for x in runs[k]),
                   "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in runs[k]),
                   "padding": 1 - r["tokens"] / r["padded_tokens"], "config": c,
                   **{f: r[f] for f in ("precision", "weights", "per_device_batch", "grad_accum", "checkpointing",
                                        "threads", "sampling")}}
        bold = "**" if k in (best, "tuneloop plan") else ""
        print(f"| {bold}{k}{bold} | {r['precision']} ({r['weights']}) | {r['per_device_batch']} x {r['grad_accum']}"
              f"{' (by length)' if r['sampling'] == 'group_by_length' else ''} | {r['threads']} | "
              f"{'on' if r['checkpointing'] else 'off'} | {med[k]:.0f} ({_fmt_runs(rows[k]['runs'])}) | {ratio:.2f}x | "
              f"{rows[k]['tokens_per_s_all']:.0f} | {rows[k]['first_step_s']:.1f} s | {mfu:.1%} | {'' if mfu_bf16 is None else f'{mfu_bf16:.1%}'} | "
              f"{rows[k]['peak_rss_mb']:.0f} MB |")
    summary = {"best_trl": best, "rows": rows, "matmul_flops": {f"{d}_t{t}": v for (t, d), v in rates.items()},
               "load_start": load[0], "load_end": load[1], "args": vars(args)}
    if best and "tuneloop plan" in med:
        summary["tuneloop_vs_best_trl"] = med["tuneloop plan"] / med[best]
        print(f"\nbest TRL: {best} ({med[best]:.0f} tokens/s); tuneloop plan {med['tuneloop plan']:.0f} tokens/s "
              f"-> {summary['tuneloop_vs_best_trl']:.2f}x; MFU tuneloop {rows['tuneloop plan']['mfu_fp32']:.1%}, "
              f"best TRL {rows[best]['mfu_fp32']:.1%} (6N model FLOPs over the fp32 matmul rate)")
        faster = [k for k in med if med[k] > med["tuneloop plan"] and k != "tuneloop plan"]
        for k in sorted(faster, key=med.get, reverse=True):
            print(f"  faster than tuneloop's plan: {k} {med[k] / med['tuneloop plan']:.2f}x")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[2], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_GGUF), help="GGUF file or model folder [default: %(default)s]")
    ap.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR), help="where a GGUF is converted once")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per run (the first is timed apart)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--grid", default="batch", choices=["batch", "knobs", "full"],
                    help="batch: precision x per-device batch (all cores, no checkpointing);\nknobs: at --at-batch, "
                         "threads, checkpointing and length-grouping one at a time;\nfull: the whole product of the axes")
    ap.add_argument("--at-batch", type=int, default=2, help="knobs: the per-device batch (the best of --grid batch)")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--threads", default=",".join(sorted({"1", str(len(os.sched_getaffinity(0)))})))
    ap.add_argument("--checkpointing", default="off,on")
    ap.add_argument("--group-by-length", default="off,on", help="TRL's train_sampling_strategy=group_by_length")
    ap.add_argument("--plan-variant", action="append", metavar="JSON",
                    help='also run tuneloop\'s plan with these Plan fields changed [default: \'{"precision": "bf16"}\'; '
                         '"none": no variant]')
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models_dir = Path(args.models_dir).expanduser()
    if args.child:
        cfg = json.loads(args.child)
        if cfg["kind"] == "matmul":
            result = matmul_child(cfg["threads"], cfg["dtype"])
        elif cfg["kind"] == "prepare":
            result = prepare_child(args.model, models_dir)
        else:
            with tempfile.TemporaryDirectory() as work:
                result = run_child(cfg, Path(args.data), args.model, models_dir, args.steps, args.global_batch,
                                   Path(work))
        print("RESULT " + json.dumps(result))
        return

    load_start = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: load average {os.getloadavg()}", flush=True)
    prep = _child("--model", args.model, "--models-dir", str(models_dir), "--child", '{"kind": "prepare"}')
    print(f"model folder {prep['folder']} ({prep['seconds']:.1f} s to resolve/convert)", flush=True)
    cfgs = configurations(args)
    thread_counts = sorted({c.get("threads") or len(os.sched_getaffinity(0)) for c in cfgs})
    dtypes = ["fp32"] + (["bf16"] if any(c.get("precision", "fp32") != "fp32" or "bf16" in json.dumps(c.get("override"))
                                         for c in cfgs) else [])

    def rates_now() -> dict:
        return {(t, d): _child("--child", json.dumps({"kind": "matmul", "threads": t, "dtype": d}))["flops"]
                for t in thread_counts for d in dtypes}

    rates = rates_now()
    print("matmul GFLOP/s at the start: " + ", ".join(f"{d} t{t} {r / 1e9:.0f}" for (t, d), r in rates.items()),
          flush=True)
    print(f"{len(cfgs)} configurations x {args.repeats} repeats, {args.steps} steps of {args.global_batch} rows",
          flush=True)
    runs: dict[str, list[dict]] = {c["label"]: [] for c in cfgs}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.global_batch * args.steps)))
        for i in range(args.repeats):
            for c in (cfgs if i % 2 == 0 else cfgs[::-1]):
                r = _child("--model", args.model, "--models-dir", str(models_dir), "--steps", str(args.steps),
                           "--global-batch", str(args.global_batch), "--data", str(data), "--child", json.dumps(c))
                runs[c["label"]].append(r)
                print(f"  [{i + 1}/{args.repeats}] {c['label']:<34} {r['tokens_per_s']:6.0f} tok/s steady "
                      f"({r['tokens_per_s_all']:5.0f} incl. first step {r['first_step_s']:.1f} s)  "
                      f"{r['peak_rss_mb']:5.0f} MB  {r['precision']}/{r['weights']} b{r['per_device_batch']}"
                      f"x{r['grad_accum']} t{r['threads']} ckpt={r['checkpointing']} padding "
                      f"{1 - r['tokens'] / r['padded_tokens']:.0%}", flush=True)
    end = rates_now()
    rates = {k: max(v, end[k]) for k, v in rates.items()}
    load_end = os.getloadavg()[0]
    r0 = next(iter(runs.values()))[0]
    n_tokens = (f"{args.global_batch * args.steps} rows, {r0['tokens']} trained-on tokens per run "
                f"({r0['tokens'] / (args.global_batch * args.steps):.0f} per row), N = {r0['matmul_params'] / 1e6:.1f}M "
                "matmul parameters")
    summary = report(runs, cfgs, rates, args, (load_start, load_end), n_tokens)
    summary["runs"] = runs
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
