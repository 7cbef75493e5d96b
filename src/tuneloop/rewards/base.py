"""What every reward shares: the sample it scores, the score it returns, and how a user function's
return value becomes a score. Pure; standard library only (the sandbox worker imports this).

A reward function scores a batch of samples. Each sample is one completion of one prompt, with the
row's extra columns. The result per sample is a `Score`: a finite float, metrics (the seed's
`metrics_list`), or an error that excludes the sample from the step's rewards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    id: str
    prompt: list[dict[str, str]]          # the prompt messages
    completion: str                       # the model's answer (text of the assistant turn)
    row: dict[str, Any] = field(default_factory=dict)   # the row's other columns (answer, tests, ...)

    def item(self) -> dict[str, Any]:
        """The seed's item object, as HTTP endpoints and evaluator tools receive it."""
        return {**self.row, "id": self.id, "messages": self.prompt, "completion": self.completion}


@dataclass(frozen=True)
class RewardError:
    """Why a sample has no reward. `kind`: exception | timeout | memory | crash | nan | type | http |
    unparseable | config."""

    kind: str
    message: str
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RewardError":
        return cls(str(d.get("kind", "exception")), str(d.get("message", "")), d.get("traceback"))


@dataclass
class Score:
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    error: RewardError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None

    @classmethod
    def failed(cls, kind: str, message: str, traceback: str | None = None) -> "Score":
        return cls(None, {}, RewardError(kind, message, traceback))

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "metrics": self.metrics, "error": self.error.to_dict() if self.error else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Score":
        err = d.get("error")
        return cls(d.get("value"), dict(d.get("metrics") or {}), RewardError.from_dict(err) if err else None)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any, what: str) -> float | Score:
    """A finite float from an int/float/bool, else a failed Score saying what was wrong."""
    if isinstance(value, bool):          # True/False are accepted as 1.0/0.0: pass/fail graders return them
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        f = float(value)
        if not math.isfinite(f):         # NaN or inf would poison the group's mean and std
            return Score.failed("nan", f"{what} {f}, not a finite number")
        return f
    try:                                  # numpy scalars and 0-d tensors, without importing numpy
        if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
            return _number(value.item(), what)
    except Exception:
        pass
    return Score.failed("type", f"{what} {type(value).__name__} {_short(value)}; expected a float or "
                                "{id, aggregate_reward_score, metrics_list}")


def coerce(value: Any, what: str = "reward function returned") -> Score:
    """Turn a user function's return value into a Score.

    Accepted: a number; or the seed's item object `{id?, aggregate_reward_score, metrics_list:
    [{name, value, type?}]}` (metrics become logged metrics; non-numeric metric values are dropped).
    Anything else (None, a string, a list, NaN) is an error that excludes the sample."""
    if isinstance(value, dict):
        if "aggregate_reward_score" not in value:
            keys = ", ".join(sorted(map(str, value))) or "no keys"
            return Score.failed("type", f"{what} an object without aggregate_reward_score ({keys})")
        number = _number(value["aggregate_reward_score"], f"{what} aggregate_reward_score")
        if isinstance(number, Score):
            return number
        metrics: dict[str, float] = {}
        raw = value.get("metrics_list") or []
        if isinstance(raw, dict):         # {name: value} is accepted too
            raw = [{"name": k, "value": v} for k, v in raw.items()]
        if isinstance(raw, list):
            for m in raw:
                if isinstance(m, dict) and "name" in m:
                    v = _number(m.get("value"), "metric")
                    if not isinstance(v, Score):
                        metrics[str(m["name"])] = v
        return Score(number, metrics)
    number = _number(value, what)
    return number if isinstance(number, Score) else Score(number)


class RewardFunction:
    """Scores batches of samples. Subclasses set `name` and implement `score`."""

    name: str = "reward"
    in_sandbox: bool = False

    def score(self, samples: list[Sample]) -> list[Score]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers, clients or models."""

    def describe(self) -> str:
        return self.name
