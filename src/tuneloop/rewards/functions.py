"""Reward references and their resolution to reward functions.

A reference (`--reward-function`, `--reward-prompt`, a row's `reward_model` column) is one of:

| form | what runs |
|---|---|
| `builtin:<name>[?opt=value&...]` | a built-in grader (see graders.py) |
| `path/to/file.py:function` | a function in a Python file, in the sandbox |
| `module.path:function` | a function in an importable module, in the sandbox |
| `http(s)://host/path` | an HTTP endpoint (see http.py) |
| `{"type": ...}` or `grader.json` | an OpenAI grader: string_check, text_similarity, python, score_model, multi |
| `Builtin.<Name>`, `prompt.txt`, or text with `{{ completion }}` | a reward prompt answered by the judge (RLAIF) |
| `name` or `name@vN` | a registered evaluator (`tuneloop evaluators create`) |

    with RewardContext(judge_model="openai:gpt-4o-mini@http://127.0.0.1:8000/v1") as ctx:
        fn = ctx.resolve("Builtin.Helpfulness")
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

from tuneloop.rewards.base import RewardFunction, Sample, Score
from tuneloop.rewards.policy import module_problem
from tuneloop.rewards.prompts import is_prompt_ref

_FILE = re.compile(r"^(?P<path>.+\.py):(?P<fn>[A-Za-z_]\w*)$")
_MODULE = re.compile(r"^(?P<mod>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<fn>[A-Za-z_]\w*)$")
_EVALUATOR = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,127})(?:@v(?P<version>\d+))?$")

REF_FORMS = ("builtin:<name>[?opt=value]", "path/to/file.py:function", "module.path:function",
             "http(s)://endpoint", "OpenAI grader JSON (inline or grader.json)",
             "Builtin.<Name> / prompt.txt / an inline prompt with {{ completion }}", "a registered evaluator NAME[@vN]")


class RefError(ValueError):
    """A reference that names nothing usable (wrong form, missing file, unknown evaluator)."""


@dataclass(frozen=True)
class RewardRef:
    kind: str                      # builtin | file | module | http | grader | prompt | evaluator
    value: str                     # name, path, module, URL, JSON text, prompt ref, evaluator ref
    function: str | None = None
    options: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def sandboxed(self) -> bool:
        return self.kind in ("file", "module")


def parse_ref(ref: str) -> RewardRef:
    """Classify a reference by its form; nothing is loaded or checked on disk here."""
    if not isinstance(ref, str) or not ref.strip():
        raise RefError("An empty reward reference.")
    ref = ref.strip()
    if ref.startswith("builtin:"):
        name, _, query = ref[len("builtin:"):].partition("?")
        return RewardRef("builtin", name, options=dict(parse_qsl(query, keep_blank_values=True)))
    if ref.startswith(("http://", "https://")):
        return RewardRef("http", ref)
    if ref.startswith("{"):
        return RewardRef("grader", ref)
    if ref.lower().endswith(".json") and "{{" not in ref:
        return RewardRef("grader", ref)
    m = _FILE.match(ref)
    if m:
        return RewardRef("file", m.group("path"), m.group("fn"))
    m = _MODULE.match(ref)
    if m:
        return RewardRef("module", m.group("mod"), m.group("fn"))
    if is_prompt_ref(ref):
        return RewardRef("prompt", ref)
    if _EVALUATOR.match(ref):
        return RewardRef("evaluator", ref)
    raise RefError(f"Cannot read {ref!r} as a reward reference.")


def ref_hint() -> str:
    return "A reward reference is one of:\n" + "\n".join(f"  {f}" for f in REF_FORMS)


class SandboxedFunction(RewardFunction):
    in_sandbox = True

    def __init__(self, name: str, target: dict[str, Any], sandbox_factory: Callable[[], Any],
                 timeout_s: float | None = None):
        self.name, self.target = name, target
        self._sandbox_factory, self.timeout_s = sandbox_factory, timeout_s

    def score(self, samples: list[Sample]) -> list[Score]:
        return self._sandbox_factory().call(self.target, samples, timeout_s=self.timeout_s)


class _Failing(RewardFunction):
    """A reference that could not be resolved: every sample fails with the reason."""

    def __init__(self, name: str, kind: str, message: str):
        self.name, self.kind, self.message = name, kind, message

    def score(self, samples: list[Sample]) -> list[Score]:
        return [Score.failed(self.kind, self.message)] * len(samples)


class RewardContext:
    """What resolving and running rewards needs: the sandbox (started on first use), judges,
    the registered-evaluator lookup, and the folder relative paths start from. Close it to stop
    sandbox workers and release judges."""

    def __init__(self, *, base_dir: str | Path | None = None, judge_model: str | None = None,
                 evaluator_lookup: Callable[[str], dict[str, Any] | None] | None = None,
                 models_dir: str | Path | None = None, timeout_s: float = 10.0, sandbox_workers: int | None = None,
                 memory_mb: int | None = None, in_process: bool = False, load_local_judges: bool = True,
                 unsafe_sandbox: bool = False):
        self.base_dir = Path(base_dir or Path.cwd()).resolve()
        self.judge_model = judge_model
        self.evaluator_lookup = evaluator_lookup
        self.models_dir = models_dir
        self.timeout_s = timeout_s
        self.sandbox_workers, self.memory_mb, self.in_process = sandbox_workers, memory_mb, in_process
        self.load_local_judges = load_local_judges
        self.unsafe_sandbox = unsafe_sandbox
        self._sandbox = None
        self._judges: dict[str, Any] = {}
        self._functions: dict[str, RewardFunction] = {}
        self._lock = threading.RLock()

    # ---- shared resources -------------------------------------------------------------------------
    def sandbox(self):
        with self._lock:
            if self._sandbox is None:
                from tuneloop.rewards.sandbox import InProcess, Sandbox

                if self.in_process:
                    self._sandbox = InProcess([str(self.base_dir)])
                else:
                    self._sandbox = Sandbox(workers=self.sandbox_workers, timeout_s=self.timeout_s,
                                            memory_mb=self.memory_mb, search_paths=[str(self.base_dir)],
                                            allow_unsafe=self.unsafe_sandbox)
            return self._sandbox

    def judge(self, ref: str | None = None):
        from tuneloop.rewards.judge import make_judge

        ref = ref or self.judge_model
        if not ref:
            raise RefError("This reward needs a judge model: pass --judge-model (a catalog model, a model folder, "
                           "or openai:MODEL@BASE_URL).")
        with self._lock:
            if ref not in self._judges:
                from tuneloop.netguard import UnsafeURLError

                try:
                    self._judges[ref] = make_judge(ref, self.models_dir)
                except UnsafeURLError as e:
                    raise RefError(e.message + (f" {e.hint}" if e.hint else "")) from None
            return self._judges[ref]

    def _grader_judge(self, model: str):
        """The judge of a score_model grader: openai:/local refs as given, a bare name on OPENAI_BASE_URL."""
        from tuneloop.rewards.judge import parse_judge_ref

        kind, _, _ = parse_judge_ref(model)
        if kind == "local" and not Path(model).expanduser().is_dir():
            from tuneloop.catalog import load_catalog

            if load_catalog().get(model) is None:
                model = f"openai:{model}"
        return self.judge(model)

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    # ---- resolution ---------------------------------------------------------------------------------
    def resolve(self, ref: str) -> RewardFunction:
        """A reward function for `ref` (cached). An unusable reference gives a function whose
        every sample fails with the reason, so a training step records it instead of crashing."""
        with self._lock:
            fn = self._functions.get(ref)
            if fn is None:
                try:
                    fn = self._resolve(ref, depth=0)
                except (RefError, ValueError) as e:
                    fn = _Failing(ref, "config", str(e))
                self._functions[ref] = fn
            return fn

    def check(self, ref: str) -> RewardFunction:
        """Like resolve, but raises RefError for an unusable reference."""
        fn = self.resolve(ref)
        if isinstance(fn, _Failing):
            raise RefError(fn.message)
        return fn

    def _resolve(self, ref: str, depth: int) -> RewardFunction:
        from tuneloop.rewards import graders

        r = parse_ref(ref)
        if r.kind == "builtin":
            try:
                return graders.BuiltinReward(r.value, r.options, self.sandbox)
            except graders.GraderConfigError as e:
                raise RefError(str(e)) from None
        if r.kind == "http":
            from tuneloop.netguard import UnsafeURLError, check_url
            from tuneloop.rewards.http import HttpReward

            try:
                check_url(r.value, what="reward endpoint")
            except UnsafeURLError as e:
                raise RefError(e.message + (f" {e.hint}" if e.hint else "")) from None
            return HttpReward(r.value, timeout_s=max(30.0, self.timeout_s))
        if r.kind == "file":
            path = self.path(r.value)
            if not path.is_file():
                raise RefError(f"Reward function file {r.value} not found (looked in {path.parent}).")
            return SandboxedFunction(f"{r.value}:{r.function}", {"kind": "file", "path": str(path.resolve()),
                                                                  "function": r.function}, self.sandbox, self.timeout_s)
        if r.kind == "module":
            problem = module_problem(r.value)
            if problem:
                raise RefError(f"Refusing the reward {ref!r}: {problem}.")
            return SandboxedFunction(ref, {"kind": "module", "module": r.value, "function": r.function},
                                     self.sandbox, self.timeout_s)
        if r.kind == "grader":
            text = r.value
            label = None
            if not text.startswith("{"):
                path = self.path(text)
                if not path.is_file():
                    raise RefError(f"Grader file {text} not found.")
                text, label = path.read_text(encoding="utf-8"), path.name
            try:
                spec = json.loads(text)
            except ValueError as e:
                raise RefError(f"The grader JSON is not valid JSON: {e}") from None
            try:
                return graders.GraderReward(spec, self.sandbox, self._grader_judge, label=label)
            except graders.GraderConfigError as e:
                raise RefError(f"Invalid grader: {e}") from None
        if r.kind == "prompt":
            from tuneloop.rewards.judge import JudgeReward
            from tuneloop.rewards.prompts import PromptError, load_prompt

            try:
                prompt = load_prompt(r.value, self.base_dir)
            except PromptError as e:
                raise RefError(str(e)) from None
            return JudgeReward(prompt, self.judge())
        # a registered evaluator
        if depth > 0 or self.evaluator_lookup is None:
            raise RefError(f"{ref!r} is not a reward reference or a registered evaluator.")
        row = self.evaluator_lookup(ref)
        if row is None:
            raise RefError(f"No evaluator named {ref!r}, and it is not a file, module, URL or built-in.")
        fn = self._resolve(row["target"], depth=1)
        fn.name = f"{row['name']}@v{row['version']}"
        return fn

    def grader(self, spec: dict[str, Any], label: str | None = None) -> RewardFunction:
        """An OpenAI grader (parsed JSON) on this context's sandbox and judges, not cached (the
        graders API runs one per request). Raises GraderConfigError for JSON that is no grader."""
        from tuneloop.rewards import graders

        return graders.GraderReward(spec, self.sandbox, self._grader_judge, label=label)

    def close(self) -> None:
        with self._lock:
            for fn in self._functions.values():
                try:
                    fn.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            for judge in self._judges.values():
                judge.close()
            if self._sandbox is not None:
                self._sandbox.close()
            self._functions, self._judges, self._sandbox = {}, {}, None

    def __enter__(self) -> "RewardContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def resolve_reward(ref: str, ctx: RewardContext) -> RewardFunction:
    return ctx.resolve(ref)
