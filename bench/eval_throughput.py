"""python bench/eval_throughput.py [--model tuneloop/small-qwen3] [--rows 64] [--new-tokens 32] [--repeats 3]

Evaluation throughput: tuneloop eval's batched passes (greedy generation in left-padded batches
of 16; log-probability scoring in right-padded batches of 8) vs the same calls one sample at a
time (batch size 1, the baseline "one-at-a-time"), on a built-in model and the same prompts.
Reports samples/s of each and the ratio; medians of --repeats, alternating A/B in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

WORDS = "what is the capital of france japan colour red blue green gold please copy word answer".split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tuneloop/small-qwen3")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from tuneloop.evaluation.metrics import answer_logprobs
    from tuneloop.evaluation.quick import load_for_eval
    from tuneloop.evaluation.quick import generate
    from tuneloop.models.builtin import ensure_builtin

    torch.manual_seed(0)
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24))) for _ in range(args.rows)]
    answers = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 40))) for _ in range(args.rows)]
    model_dir = ensure_builtin(args.model, Path(os.environ.get("TUNELOOP_MODELS_DIR", Path.home() / ".tuneloop/models")))
    model, tok = load_for_eval(str(model_dir))
    tasks = {
        "generate": lambda bs: generate(model, tok, prompts, args.new_tokens, batch_size=bs),
        "score": lambda bs: answer_logprobs(model, tok, list(zip(prompts, answers)), batch_size=bs),
    }
    report = {}
    for name, fn in tasks.items():
        times = {"one-at-a-time": [], "batched": []}
        for i in range(args.repeats):
            for kind in (("one-at-a-time", "batched") if i % 2 == 0 else ("batched", "one-at-a-time")):
                bs = 1 if kind == "one-at-a-time" else (16 if name == "generate" else 8)
                start = time.perf_counter()
                fn(bs)
                times[kind].append(time.perf_counter() - start)
        med = {k: args.rows / statistics.median(v) for k, v in times.items()}
        report[name] = {"samples_per_s": med, "ratio": med["batched"] / med["one-at-a-time"]}
        print(f"{name:<9} one-at-a-time {med['one-at-a-time']:7.1f} samples/s  batched {med['batched']:7.1f} "
              f"samples/s  -> {report[name]['ratio']:.2f}x", flush=True)
    print(json.dumps({"model": args.model, "rows": args.rows, "threads": torch.get_num_threads(),
                      "load_average": os.getloadavg()[0], **report}, indent=2))


if __name__ == "__main__":
    main()
