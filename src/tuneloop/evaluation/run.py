"""tuneloop eval: evaluate a model on a dataset, optionally against its base model.

    result = evaluate(EvalRequest(model="sft", dataset="val.jsonl", compare_base=True), output=Path("out"),
                      lookups=lookups, dataset_lookup=store.get_dataset_version)
    result["model"]["loss"], result["base"]["loss"]

Pure of the store and of where state lives: the evaluation service (service/evaluations.py)
passes the lookups, the output folder and the models folder, and tracks the job.

The model is a job (its name, or a technique for the project's latest), a registered version
(`GROUP@vN`), an adapter or model folder, or a catalog / built-in model. The technique follows the
data unless given: preference pairs -> DPO metrics, prompt/completion or messages -> SFT metrics,
prompt-only rows or `--evaluator` -> generated answers scored by the evaluators (reward functions,
graders, reward prompts answered by `--judge`). With `--compare-base` and `--judge`, the judge also
compares the model's and the base model's answers pairwise (both orders) for a win rate.
Everything goes to OUTPUT: results.json, report.md and metrics.png.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneloop.data.stage import stage_dataset
from tuneloop.data.staged import read_rows
from tuneloop.errors import ValidationError
from tuneloop.evaluation.metrics import (PAIRWISE_PROMPT, answer_logprobs, pairwise_verdict, preference_metrics,
                                         row_logprobs, sft_metrics)
from tuneloop.evaluation.quick import generate, load_for_eval  # torch loads inside, when a model does
from tuneloop.models.resolve import ModelLookups, ModelRef, resolve
from tuneloop.rewards.base import Sample, Score
from tuneloop.rewards.functions import RewardContext
from tuneloop.rewards.policy import RowRewardPolicy

DatasetLookup = Callable[[str], Any]   # a registered dataset name -> its row (the store's, passed in)

TECHNIQUES = ("sft", "dpo", "rlvr")


@dataclass
class EvalRequest:
    model: str
    dataset: str
    technique: str | None = None
    evaluators: list[str] = field(default_factory=list)
    judge: str | None = None
    compare_base: bool = False
    output: str | None = None
    samples: int | None = None
    max_new_tokens: int = 64
    beta: float = 0.1
    project: str | None = None
    column_map: str | None = None


def resolve_eval_model(ref: str, project: str | None = None, lookups: ModelLookups | None = None) -> ModelRef:
    """The model to evaluate (tuneloop.models.resolve): a folder, a catalog / built-in id, and with
    the service layer's `lookups` also GROUP@vN, a deployed name, a job or a technique."""
    return resolve(ref, use="eval", project=project, lookups=lookups)


def _stage(req: EvalRequest, work: Path, dataset_lookup: DatasetLookup | None = None
           ) -> tuple[str, list[dict[str, Any]]]:
    order = [req.technique] if req.technique else (["rlvr"] if req.evaluators else ["dpo", "sft", "rlvr"])
    errors: list[ValidationError] = []
    for technique in order:
        if technique not in TECHNIQUES:
            raise ValidationError(f"Unknown technique {technique!r} for eval.", hint="Use sft, dpo or rlvr.",
                                  param="technique")
        try:
            staged = stage_dataset(req.dataset, technique, work / f"{technique}.jsonl", column_map=req.column_map,
                                   take=req.samples, command="tuneloop eval", lookup=dataset_lookup,
                                   reward_model=req.evaluators[0] if technique == "rlvr" and req.evaluators else None,
                                   reward_check=RowRewardPolicy.for_job(flags=req.evaluators)
                                   if technique == "rlvr" else None)
        except ValidationError as e:
            if technique == "rlvr" and "reward_model" in (getattr(e, "missing", None) or []):
                e.hint = "Prompt-only rows are scored by evaluators: pass --evaluator REF (builtin:exact_match, " \
                         "file.py:function, an evaluator NAME, or Builtin.Correctness with --judge MODEL)."
            errors.append(e)
            continue
        rows = read_rows(staged.path)
        return technique, rows
    best = min(errors, key=_missing_columns)   # the format the data came closest to
    if len(errors) > 1:
        best.hint = (best.hint or "") + "\n(The data matched none of: preference pairs, prompt/completion, " \
            "prompt-only RL rows; this is the closest. Pass --technique to choose.)"
    raise best


def _missing_columns(e: ValidationError) -> int:
    """How far the data is from a technique's format: its missing columns (0 for other errors,
    such as an unreadable file, which every technique would report alike)."""
    return len(getattr(e, "missing", None) or [])


def _split(row: dict[str, Any]) -> tuple[Any, str]:
    """(prompt, reference answer) of an SFT row: prompt/completion, or messages up to the last assistant turn."""
    if "messages" in row:
        msgs = row["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        return msgs[:last], msgs[last]["content"]
    return row["prompt"], row["completion"]


def _sft(model, tok, rows, max_new_tokens) -> tuple[dict[str, float], list[str]]:
    """Loss, perplexity and token accuracy on the tokens training covers (every assistant turn of a
    messages row), exact match of the greedy answer to the last turn."""
    pairs = [_split(r) for r in rows]
    metrics = sft_metrics(row_logprobs(model, tok, rows))
    answers = generate(model, tok, [p for p, _ in pairs], max_new_tokens)
    metrics["exact_match"] = sum(a.strip() == ref.strip() for a, (_, ref) in zip(answers, pairs)) / len(pairs)
    return metrics, answers


def _logps_pairs(model, tok, rows) -> list[tuple[float, float]]:
    chosen = answer_logprobs(model, tok, [(r["prompt"], r["chosen"]) for r in rows])
    rejected = answer_logprobs(model, tok, [(r["prompt"], r["rejected"]) for r in rows])
    return [(c[0], r[0]) for c, r in zip(chosen, rejected)]


def _logp_preference(pairs: list[tuple[float, float]]) -> dict[str, float]:
    return {"logp_accuracy": sum(c > r for c, r in pairs) / len(pairs),
            "logp_margin": sum(c - r for c, r in pairs) / len(pairs), "pairs": float(len(pairs))}


def score_answers(ctx, rows: list[dict[str, Any]], answers: list[str], refs: list[str] | None = None,
                  default_ref: str | None = None) -> dict[str, list[Score]]:
    """Each reward's scores of the answers it applies to: with `refs`, every ref scores every row;
    otherwise each row is scored by its reward_model, else `default_ref`. One call per reward."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for ref in refs or [r.get("reward_model") or default_ref or ""]:
            groups.setdefault(ref, []).append(i)
    out = {}
    for ref, idx in groups.items():
        samples = [Sample(str(i), rows[i]["prompt"] if isinstance(rows[i]["prompt"], list) else
                          [{"role": "user", "content": rows[i]["prompt"]}], answers[i],
                          {k: v for k, v in rows[i].items() if k != "prompt"}) for i in idx]
        out[ref] = ctx.resolve(ref).score(samples)
    return out


def _reward_means(scored: dict[str, list[Score]]) -> dict[str, float]:
    """reward/<ref>: the mean over the answers that scored; its failures and metrics_list means."""
    out: dict[str, float] = {}
    for ref, scores in scored.items():
        ok = [s for s in scores if s.ok]
        out[f"reward/{ref}"] = sum(s.value for s in ok) / len(ok) if ok else float("nan")
        out[f"reward/{ref}/failed"] = float(len(scores) - len(ok))
        for k in sorted({k for s in ok for k in s.metrics}):
            vals = [s.metrics[k] for s in ok if k in s.metrics]
            out[f"reward/{ref}/{k}"] = sum(vals) / len(vals)
    return out


def _win_rate(judge, rows, model_answers, base_answers) -> dict[str, float]:
    """The judge compares each pair in both orders (position bias cancels): model wins both 1,
    loses both 0, anything else 0.5; prompts without a verdict in either order are left out."""
    def text(p):
        return p if isinstance(p, str) else "\n".join(f"{m['role']}: {m['content']}" for m in p)

    convs = []
    for r, m, b in zip(rows, model_answers, base_answers):
        prompt = text(r["prompt"] if "prompt" in r else _split(r)[0])
        convs.append([{"role": "user", "content": PAIRWISE_PROMPT.format(prompt=prompt, a=m, b=b)}])
        convs.append([{"role": "user", "content": PAIRWISE_PROMPT.format(prompt=prompt, a=b, b=m)}])
    answers = judge.complete(convs)
    wins, undecided = [], 0
    for i in range(0, len(answers), 2):
        first = pairwise_verdict(answers[i]) if isinstance(answers[i], str) else None
        second = pairwise_verdict(answers[i + 1]) if isinstance(answers[i + 1], str) else None
        votes = [v for v in (first, None if second is None else 1.0 - second) if v is not None]
        if not votes:
            undecided += 1
            continue
        wins.append(sum(votes) / len(votes))
    return {"win_rate_vs_base": sum(wins) / len(wins) if wins else float("nan"),
            "pairwise_judged": float(len(wins)), "pairwise_undecided": float(undecided)}


def check_request(req: EvalRequest, lookups: ModelLookups | None = None,
                  dataset_lookup: DatasetLookup | None = None) -> tuple[str, int]:
    """Validate before any job exists: the model reference resolves and the data stages.
    Returns (technique, rows). `dataset_lookup` (the service layer's) resolves registered dataset
    names; without it only files and URLs stage."""
    resolve_eval_model(req.model, req.project, lookups)
    with tempfile.TemporaryDirectory() as tmp:
        technique, rows = _stage(req, Path(tmp), dataset_lookup)
    if not rows:
        raise ValidationError(f"{req.dataset} has no rows to evaluate.", param="dataset")
    _check_evaluators(technique, req, rows)
    return technique, len(rows)


def _check_evaluators(technique: str, req: EvalRequest, rows: list[dict[str, Any]]) -> None:
    if technique == "rlvr" and not req.evaluators and not any(r.get("reward_model") for r in rows):
        raise ValidationError("Prompt-only rows need an evaluator to score the answers.",
                              hint="Pass --evaluator builtin:exact_match (or a file.py:function, an evaluator NAME, "
                                   "Builtin.Correctness with --judge ...).", param="evaluator")


def evaluate(req: EvalRequest, *, output: Path, models_dir: Path | None = None,
             on_progress: Callable[[str], None] | None = None, base_dir: str | None = None,
             lookups: ModelLookups | None = None, dataset_lookup: DatasetLookup | None = None) -> dict[str, Any]:
    """Evaluate `req` and write results.json, report.md and metrics.png to `output` (replaced when
    it holds a previous evaluation); `on_progress` hears each phase (and may raise to stop)."""
    say = on_progress or (lambda message: None)
    started = time.monotonic()
    out = Path(output)
    if out.is_dir() and any(out.iterdir()) and not (out / "results.json").is_file():
        raise ValidationError(f"--output {out} is a folder with other files in it; an evaluation would "
                              "replace its contents.", hint="Pass a new or empty folder (or a previous eval's "
                              "output, which is replaced).", param="output")
    target = resolve_eval_model(req.model, req.project, lookups)
    base_path = target.load_path()
    with tempfile.TemporaryDirectory() as tmp:
        technique, rows = _stage(req, Path(tmp), dataset_lookup)
    if not rows:
        raise ValidationError(f"{req.dataset} has no rows to evaluate.", param="dataset")
    _check_evaluators(technique, req, rows)
    say(f"{len(rows)} {technique} rows; model {target.name}" + (f" (adapter on {base_path})" if target.adapter else ""))
    model, tok = load_for_eval(base_path, target.adapter)
    say("model loaded")
    base = None
    if req.compare_base or (technique == "dpo" and target.adapter):
        base, _ = load_for_eval(base_path) if target.adapter else (None, None)
        if req.compare_base and base is None:
            say("--compare-base: the model is not an adapter, so it is its own base; no comparison")
    result: dict[str, Any] = {"model_ref": req.model, "model": {}, "base": None, "technique": technique,
                              "dataset": req.dataset, "rows": len(rows), "base_model": base_path,
                              "adapter": target.adapter, "evaluators": list(req.evaluators), "judge": req.judge}
    answers: dict[str, list[str]] = {}
    if technique == "sft":
        result["model"], answers["model"] = _sft(model, tok, rows, req.max_new_tokens)
        say("model evaluated")
        if req.compare_base and base is not None:
            result["base"], answers["base"] = _sft(base, tok, rows, req.max_new_tokens)
    elif technique == "dpo":
        policy = _logps_pairs(model, tok, rows)
        reference = _logps_pairs(base, tok, rows) if base is not None else None
        # with a reference (an adapter's base): DPO's implicit reward; always: the plain log p margin
        result["model"] = preference_metrics(policy, reference, req.beta) if reference is not None else {}
        result["model"].update(_logp_preference(policy))
        if req.compare_base and reference is not None:
            result["base"] = _logp_preference(reference)
        result["beta"] = req.beta
    else:
        prompts = [r["prompt"] for r in rows]
        answers["model"] = generate(model, tok, prompts, req.max_new_tokens)
        say(f"{len(prompts)} answers generated")
        if req.compare_base and base is not None:
            answers["base"] = generate(base, tok, prompts, req.max_new_tokens)
    refs = list(req.evaluators)
    if technique == "rlvr" and not refs:   # the rows name their rewards
        refs = sorted({r["reward_model"] for r in rows if r.get("reward_model")})
    if refs or (req.judge and req.compare_base and "base" in answers):
        say("scoring answers" + (f" with {', '.join(refs)}" if refs else ""))
        with RewardContext(base_dir=base_dir or Path.cwd(), judge_model=req.judge,
                           models_dir=models_dir) as ctx:
            if refs:
                if "model" not in answers:
                    answers["model"] = generate(model, tok, [_split(r)[0] if "completion" in r or "messages" in r
                                                             else r["prompt"] for r in rows], req.max_new_tokens)
                given = list(req.evaluators) or None   # None: each row's own reward_model
                result["model"].update(_reward_means(score_answers(ctx, rows, answers["model"], given)))
                if "base" in answers:
                    result["base"] = (result["base"] or {}) | _reward_means(
                        score_answers(ctx, rows, answers["base"], given))
            if req.judge and req.compare_base and "base" in answers:
                say(f"pairwise judging {len(rows)} prompts x 2 orders with {req.judge}")
                result["model"].update(_win_rate(ctx.judge(), rows, answers["model"], answers["base"]))
    result["samples"] = [{"prompt": r.get("prompt", r.get("messages")), **{k: v[i] for k, v in answers.items()}}
                         for i, r in enumerate(rows[:20])] if answers else []
    result["seconds"] = round(time.monotonic() - started, 2)
    write_outputs(result, out)
    result["output"] = str(out)
    return result


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """results.json, report.md and metrics.png, written to a temporary folder and moved in place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".eval-"))
    try:
        (tmp / "results.json").write_text(json.dumps(result, indent=2, default=str))
        (tmp / "report.md").write_text(report(result))
        _plot(result, tmp / "metrics.png")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def report(result: dict[str, Any]) -> str:
    base = result.get("base") or {}
    lines = [f"# Evaluation of {result['model_ref']}", "",
             f"- technique: {result['technique']}, {result['rows']} rows of {result['dataset']}",
             f"- model: {result['adapter'] or result['base_model']}" + (f" (adapter on {result['base_model']})"
                                                                        if result['adapter'] else ""), ""]
    if result.get("judge"):
        lines.insert(4, f"- judge: {result['judge']}")
    lines += ["| metric | model | base |", "|---|---|---|"]
    for k, v in result["model"].items():
        b = base.get(k)
        lines.append(f"| {k} | {v:.4g} | {'' if b is None else f'{b:.4g}'} |")
    if result.get("samples"):
        keys = [k for k in ("model", "base") if k in result["samples"][0]]
        lines += ["", "## Sample answers", "", "| prompt | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for s in result["samples"][:10]:
            prompt = s["prompt"] if isinstance(s["prompt"], str) else s["prompt"][-1]["content"]
            cells = [str(x).replace("|", "\\|").replace("\n", " ")[:80] for x in [prompt, *[s[k] for k in keys]]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k, v in result["model"].items() if isinstance(v, (int, float)) and math.isfinite(v)
             and not k.endswith(("/failed", "tokens", "pairs", "judged", "undecided"))]
    if not names:
        return
    base = result.get("base") or {}
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 1, 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        labels, values = ["model"], [result["model"][name]]
        if isinstance(base.get(name), (int, float)):
            labels.append("base")
            values.append(base[name])
        bars = ax.bar(labels, values, color=["tab:blue", "tab:gray"][:len(values)])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{result['model_ref']} on {Path(str(result['dataset'])).name} ({result['technique']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
