"""The graders API on the rewards code: POST /v1/fine_tuning/alpha/graders/validate and /run
(api/graders.py), answering as the official client's `GraderValidateResponse` and
`GraderRunResponse` (openai/types/fine_tuning/alpha/).

    graders = GraderService(settings)
    graders.validate({"type": "string_check", ...})                # {"grader": {...}} or ValidationError
    graders.run(grader, model_sample="Paris", item={"answer": "Paris"})   # {"reward": 1.0, "metadata": ...}

A grader is rewards/graders.py's `GraderReward`: `python` graders run only in the rewards sandbox
(one pool for the service, started on first use), `score_model` graders ask their judge. A grader
that fails on this sample is not a request error: like OpenAI, the reward is 0 and
`metadata.errors` says which kind of failure it was.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.rewards import graders as G
from tuneloop.rewards.base import Sample, Score
from tuneloop.rewards.functions import RewardContext
from tuneloop.settings import Settings

_ERROR_FLAGS = ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
                "model_grader_refusal_error", "model_grader_server_error", "other_error",
                "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
                "truncated_observation_error", "unresponsive_reward_error")


class GraderService:
    def __init__(self, settings: Settings, *, timeout_s: float = 10.0):
        self.settings = settings
        self.timeout_s = timeout_s
        self._ctx: RewardContext | None = None
        self._lock = threading.Lock()

    def _context(self) -> RewardContext:
        with self._lock:
            if self._ctx is None:
                folder = self.settings.home / "graders"   # the sandbox's search path: empty on purpose
                folder.mkdir(parents=True, exist_ok=True)
                self._ctx = RewardContext(base_dir=folder, models_dir=self.settings.models_dir,
                                          timeout_s=self.timeout_s)
            return self._ctx

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._ctx.close()
                self._ctx = None

    # ---- validate -------------------------------------------------------------------------------
    def validate(self, grader: Any) -> dict[str, Any]:
        """`{"grader": grader}` when it is a grader tuneloop can run; else ValidationError(param=grader...)."""
        check(grader)
        return {"grader": grader}

    # ---- run -------------------------------------------------------------------------------------
    def run(self, grader: Any, model_sample: str, item: Any = None) -> dict[str, Any]:
        check(grader)
        if item is not None and not isinstance(item, dict):
            raise ValidationError(f"item must be a JSON object (the dataset row), got {type(item).__name__}.",
                                  param="item", hint='Send the row the sample answers, e.g. {"answer": "Paris"}.')
        item = dict(item or {})
        prompt = item.get("messages") if isinstance(item.get("messages"), list) else []
        sample = Sample(str(item.get("id", "item")), prompt, model_sample, item)
        ctx = self._context()
        errors = {flag: False for flag in _ERROR_FLAGS}
        details: dict[str, str | None] = {"python_grader_runtime_error_details": None,
                                          "python_grader_server_error_type": None,
                                          "model_grader_server_error_details": None}
        start = time.monotonic()
        if grader["type"] == "multi":
            sub_rewards, reward = self._multi(ctx, grader, sample, errors, details)
            scores = dict(sub_rewards)
        else:
            score = ctx.grader(grader, label=grader.get("name")).score([sample])[0]
            reward = _value(score, grader["type"], errors, details)
            sub_rewards, scores = {}, {grader.get("name") or grader["type"]: reward}
        metadata = {"name": grader.get("name") or grader["type"], "type": grader["type"], "errors": errors,
                    "execution_time": round(time.monotonic() - start, 6), "scores": scores,
                    "token_usage": None, "sampled_model_name": None}
        errors.update(details)
        return {"reward": reward, "metadata": metadata, "sub_rewards": sub_rewards,
                "model_grader_token_usage_per_model": {}}

    def _multi(self, ctx: RewardContext, grader: dict[str, Any], sample: Sample, errors: dict[str, bool],
               details: dict[str, str | None]) -> tuple[dict[str, float], float]:
        """Each named grader's reward (0 where it failed), then calculate_output over them."""
        subs: dict[str, float] = {}
        for name, spec in grader["graders"].items():
            if spec["type"] == "multi":
                subs[name] = self._multi(ctx, spec, sample, errors, details)[1]
            else:
                subs[name] = _value(ctx.grader(spec, label=name).score([sample])[0], spec["type"], errors, details)
        try:
            total = G.eval_formula(G.compile_formula(grader["calculate_output"], set(subs)), subs)
        except (ArithmeticError, ValueError):
            errors["formula_parse_error"] = True
            return subs, 0.0
        return subs, float(total)


def _value(score: Score, kind: str, errors: dict[str, bool], details: dict[str, str | None]) -> float:
    """The score's value, or 0.0 with the failure's flag set (OpenAI's `metadata.errors`)."""
    if score.ok:
        return float(score.value)
    err = score.error
    if kind == "python":
        if err.kind in ("timeout", "memory", "crash"):
            errors["python_grader_server_error"] = True
            details["python_grader_server_error_type"] = err.kind
            if err.kind == "timeout":
                errors["unresponsive_reward_error"] = True
        else:
            errors["python_grader_runtime_error"] = True
            details["python_grader_runtime_error_details"] = err.message
    elif kind == "score_model":
        flag = "model_grader_parse_error" if err.kind == "unparseable" else "model_grader_server_error"
        errors[flag] = True
        if flag == "model_grader_server_error":
            details["model_grader_server_error_details"] = err.message
    elif err.kind == "config":
        errors["sample_parse_error"] = True   # a template that cannot render this sample
    else:
        errors["other_error"] = True
    return 0.0


def check(grader: Any) -> None:
    """Raise ValidationError (param `grader...`) for JSON that is no grader tuneloop can run; a
    python grader's source must also compile (it is compiled, not run, here)."""
    try:
        G.check_grader(grader, "grader")
    except G.GraderConfigError as e:
        where = str(e).split(" ", 1)[0].rstrip(":")
        raise ValidationError(f"Invalid grader: {e}.", param=where if where.startswith("grader") else "grader",
                              hint="Graders: string_check, text_similarity, python, score_model, multi "
                                   "(OpenAI's grader JSON).") from None
    _compile_python(grader, "grader")


def _compile_python(grader: dict[str, Any], where: str) -> None:
    if grader["type"] == "python":
        try:
            compile(grader["source"], "<grader>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
            line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
            why = e.msg if isinstance(e, SyntaxError) else type(e).__name__
            raise ValidationError(f"The python grader's source does not compile{line}: {why}.",
                                  param=f"{where}.source", hint="It must define grade(sample, item) -> float.") from None
    for name, sub in (grader.get("graders") or {}).items():
        _compile_python(sub, f"{where}.graders.{name}")
