"""python bench/sandbox_overhead.py [--completions 1000] [--batch 32] [--repeats 5] [--steps 6]

Sandbox overhead: a reward function in a Python file, run in tuneloop's sandbox (isolated worker
processes: namespaces, seccomp, cgroup; JSON over pipes, per-call timeouts; bubblewrap or the
namespaces launcher as the machine allows, `TUNELOOP_SANDBOX_ISOLATION` forces one) vs the same
function called in-process, over `--completions`
completions scored in batches of `--batch` (the planned GRPO step of the built-in model: 4 prompts
x 8 completions). The overhead per step (sandbox minus in-process) is reported as a share of the
time of one real GRPO step of the same plan (tuneloop/tiny-qwen3 on the bundled RLVR task, measured
here with `--steps` steps). Worker start-up (once per job) is reported apart. Medians of
`--repeats`, alternating A/B. Baseline: "in-process".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REWARD = '''
import re

def score(completion, answer, prompt):
    """Exact match on the first word, plus a format bonus: a typical cheap verifiable reward."""
    words = re.findall(r"[a-z]+", completion.lower())
    correct = float(bool(words) and words[0] == answer)
    return {"aggregate_reward_score": correct + 0.1 * (len(words) == 1),
            "metrics_list": [{"name": "correct", "value": correct, "type": "Metric"}]}
'''
REPO = Path(__file__).resolve().parents[1]


def samples(n: int):
    from tuneloop.data.staged import read_rows
    from tuneloop.rewards.base import Sample

    rows = read_rows(REPO / "src/tuneloop/demo_data/rlvr.jsonl")
    answers = ["red", "blue", "green", "gold", "gold please", "", "the word red"]
    return [Sample(str(i), rows[i % len(rows)]["prompt"], answers[i % len(answers)], {"answer": rows[i % len(rows)]["answer"]})
            for i in range(n)]


def score_all(runner, target, items, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        out = runner.call(target, items[i:i + batch])
        assert all(s.ok for s in out), out[:2]
    return time.perf_counter() - start


def grpo_step_seconds(steps: int, work: Path) -> float:
    """Median seconds of one planned GRPO step (tiny-qwen3, the bundled RLVR task, builtin reward)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.rewards.engine import RewardEngine
    from tuneloop.rewards.functions import RewardContext
    from tuneloop.data.lengths import token_stats
    from tuneloop.models.resolve import resolve
    from tuneloop.models.shape import model_shape
    from tuneloop.service.models import model_defaults
    from tuneloop.training.recipes import grpo
    from tuneloop.training.plan import detect_hardware, make_plan

    model = "tuneloop/tiny-qwen3"
    data = REPO / "src/tuneloop/demo_data/rlvr.jsonl"
    model_dir = ensure_builtin(model, Path(os.environ.get("TUNELOOP_MODELS_DIR", Path.home() / ".tuneloop/models")))
    resolved = resolve(model, technique="rlvr", training_type="lora")
    plan = make_plan(technique="rlvr", training_type="lora", shape=model_shape(model_dir, 0),
                     data=token_stats(data, "rlvr", model_dir), hw=detect_hardware(),
                     defaults=model_defaults(resolved, "rlvr", "lora"), overrides={"max_steps": steps})
    trainer, _ = grpo.build_trainer(model_dir=str(model_dir), data_path=data, work_dir=work, plan=plan, lora=True,
                                    target_modules=resolved.lora_targets, callbacks=[],
                                    engine=RewardEngine(RewardContext(), "builtin:exact_match"))
    trainer.train()
    times = [h["step_time"] for h in trainer.state.log_history if "step_time" in h][1:]  # the first warms up
    return statistics.median(times), plan.global_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--completions", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    from tuneloop.rewards.sandbox import InProcess, Sandbox

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reward.py"
        path.write_text(REWARD)
        target = {"kind": "file", "path": str(path), "function": "score"}
        items = samples(args.completions)
        t = time.perf_counter()
        box = Sandbox(timeout_s=10.0, search_paths=[tmp])
        box.warm(target)
        box.call(target, items[:2])
        startup = time.perf_counter() - t
        inproc = InProcess([tmp])
        inproc.call(target, items[:2])
        runs: dict[str, list[float]] = {"in-process": [], "sandbox": []}
        for i in range(args.repeats):
            for kind in (("in-process", "sandbox") if i % 2 == 0 else ("sandbox", "in-process")):
                runs[kind].append(score_all(box if kind == "sandbox" else inproc, target, items, args.batch))
        isolation = box.info()["isolation"]
        box.close()
        med = {k: statistics.median(v) for k, v in runs.items()}
        calls = -(-args.completions // args.batch)
        overhead_per_step = (med["sandbox"] - med["in-process"]) / calls
        step_s, planned_batch = grpo_step_seconds(args.steps, Path(tmp))
    share = overhead_per_step / step_s
    print(f"{args.completions} completions in {calls} batches of {args.batch} ({box.size} sandbox workers, "
          f"isolation: {isolation}):")
    print(f"  in-process: median {med['in-process'] * 1000:.1f} ms total (runs: "
          + ", ".join(f"{x * 1000:.1f}" for x in runs["in-process"]) + ")")
    print(f"  sandbox:    median {med['sandbox'] * 1000:.1f} ms total (runs: "
          + ", ".join(f"{x * 1000:.1f}" for x in runs["sandbox"]) + ")")
    print(f"  overhead per step of {args.batch}: {overhead_per_step * 1000:.2f} ms; planned GRPO step "
          f"(tiny-qwen3, {planned_batch} completions): median {step_s * 1000:.0f} ms -> {share:.1%} of step time")
    print(f"  worker start-up (once per job, {box.size} workers, first load): {startup * 1000:.0f} ms")
    print(json.dumps({"isolation": isolation, "median_s": med, "overhead_per_step_s": overhead_per_step,
                      "step_s": step_s, "share_of_step": share, "startup_s": startup,
                      "load_average": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
