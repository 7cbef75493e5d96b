"""A standard benchmark ("mmlu", "gsm8k", "hellaswag", ...) through EleutherAI's lm-eval, when it
and the benchmark's data are available; otherwise a ValidationError saying what is missing. The
SDK's BenchMarkEvaluator calls this; the model reference resolves like `tuneloop eval`'s, with the
service layer's lookups.

    result = run_benchmark("mmlu", "tuneloop/tiny-qwen3", samples=20)
    result["model"]      # {"mmlu/acc,none": 0.25, ...}; results.json and report.md under result["output"]
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.evaluation.run import resolve_eval_model
from tuneloop.models.resolve import ModelLookups
from tuneloop.settings import load_settings, resolve_project


def run_benchmark(benchmark: str, model: str, *, project: str | None = None, samples: int | None = None,
                  output: str | None = None, lookups: ModelLookups | None = None) -> dict[str, Any]:
    """Run `benchmark` on `model` (its first `samples` items) and write results.json and report.md
    to `output` (default: the project's evals/bench-STAMP folder). Returns the result record."""
    if importlib.util.find_spec("lm_eval") is None:
        raise ValidationError(
            f"Benchmark {benchmark!r} needs EleutherAI's lm-eval, which is not installed with tuneloop.",
            hint="pip install lm-eval (its benchmarks also download their data from the Hugging Face Hub). "
                 "Without them, evaluate on your own data: tuneloop eval --model ... --dataset ...",
            param="benchmark")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValidationError(f"Benchmark {benchmark!r} downloads its data from the Hugging Face Hub, "
                              "and HF_HUB_OFFLINE=1 is set.", hint="Unset HF_HUB_OFFLINE on a machine with "
                              "network access (or pre-fill the datasets cache).", param="benchmark")
    import lm_eval

    target = resolve_eval_model(model, project, lookups)
    args = f"pretrained={target.load_path()}" + (f",peft={target.adapter}" if target.adapter else "")
    raw = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=[benchmark], limit=samples)
    out = Path(output) if output else (load_settings().home / "projects" / resolve_project(project)
                                       / "evals" / time.strftime("bench-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    # every numeric field lm-eval reports per task (acc, acc_norm, their stderr ...), as task/field
    metrics = {f"{task}/{k}": float(v) for task, res in raw["results"].items() for k, v in res.items()
               if isinstance(v, (int, float))}
    result = {"model_ref": model, "model": metrics, "base": None, "technique": "benchmark",
              "benchmark": benchmark, "output": str(out)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(f"# {benchmark} on {model}\n\n" + "\n".join(
        f"- {k}: {v:.4g}" for k, v in metrics.items()) + "\n")
    return result
