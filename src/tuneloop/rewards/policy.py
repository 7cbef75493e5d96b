"""Which rewards data may choose, and which modules a `module:fn` reward may name. Pure; standard
library only.

    policy = RowRewardPolicy.for_job(flags=["builtin:exact_match"], allowed=[], evaluators={"math"})
    policy("os:system")         # "... a row may name only ..." (why it is refused), or None

A dataset is data: a row's `reward_model` may route its samples to a `builtin:` grader, a built-in
reward prompt (`Builtin.<Name>`), a registered evaluator, or a reward the job's own flags named
(`--reward-function`, `--reward-prompt`, `--allow-row-rewards`). Anything else (a file, a module,
a URL, grader JSON, an inline prompt) would let the data choose code to run or a URL to call, and
is refused at staging with the row's line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Iterable

_EVALUATOR = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,127})(?:@v(?P<version>\d+))?$")
_BUILTIN_PROMPT = re.compile(r"^Builtin\.[A-Za-z]+$")

# Modules a `module:fn` reward may never name: the standard library (process, file, network and
# interpreter access among them) and tuneloop itself. A reward module is the user's own code.
_REFUSED_TOP = frozenset(sys.stdlib_module_names) | {"tuneloop", "__main__", "builtins"}


def module_problem(module: str) -> str | None:
    """Why `module` may not be a reward module, or None."""
    top = module.split(".", 1)[0]
    if top in _REFUSED_TOP:
        what = "tuneloop itself" if top == "tuneloop" else "a standard-library module"
        return (f"module {module!r} is {what}; a module reward must be your own module (a file reward "
                "path/to/reward.py:fn works too)")
    if any(part.startswith("_") for part in module.split(".")):
        return f"module {module!r} is private (a name starting with '_')"
    return None


@dataclass(frozen=True)
class RowRewardPolicy:
    """The rewards a row's `reward_model` may name for one job. Callable: `policy(ref)` is the
    reason `ref` is refused, or None. Picklable (staging workers get a copy)."""

    allowed: frozenset[str] = frozenset()            # refs the job's flags named, exactly
    evaluators: frozenset[str] | None = None         # registered evaluator names (None: any, looked up later)

    @classmethod
    def for_job(cls, flags: Iterable[str | None] = (), allowed: Iterable[str] = (),
                evaluators: Iterable[str] | None = None) -> "RowRewardPolicy":
        refs = {r.strip() for r in [*flags, *allowed] if r and r.strip()}
        return cls(frozenset(refs), None if evaluators is None else frozenset(evaluators))

    def __call__(self, ref: str) -> str | None:
        ref = ref.strip()
        if ref in self.allowed or ref.startswith("builtin:") or _BUILTIN_PROMPT.match(ref):
            return None
        m = _EVALUATOR.match(ref)   # a bare name resolves only to a registered evaluator, never to code
        if m and (self.evaluators is None or m.group("name") in self.evaluators):
            return None
        if m:
            return (f"reward_model {ref!r} is not a registered evaluator (tuneloop evaluators list shows them); "
                    "a row may name only builtin: graders, Builtin.* prompts, registered evaluators and the "
                    "rewards this job's flags allow")
        return (f"reward_model {_short(ref)} would let the data choose the code or URL a reward runs; a row may "
                "name only builtin: graders, Builtin.* prompts, registered evaluators and the rewards this job's "
                "flags allow (pass it as --reward-function/--reward-prompt, or allow it for rows with "
                "--allow-row-rewards REF)")


def _short(ref: str, limit: int = 80) -> str:
    text = repr(ref)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
