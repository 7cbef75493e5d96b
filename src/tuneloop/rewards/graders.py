"""Graders: the built-in `builtin:<name>` reward functions and OpenAI grader JSON.

Built-ins are pure functions `(completion, row, options) -> float | Score` (code_tests runs in the
sandbox). A reference carries options as a query string, e.g.
`builtin:numeric_match?tolerance=0.01&column=answer`. Graders that compare against a reference read
it from `?column=NAME`, else from the first of REFERENCE_COLUMNS the row has.

| name | score |
|---|---|
| exact_match | 1 when the answer equals the reference after trimming whitespace (`?ignore_case=true`, `?normalize=true` also drops punctuation and repeated spaces); a list reference matches any item |
| numeric_match | 1 when the answer's number is within `tolerance` (absolute, default 1e-6) or `relative` (relative) of the reference; the number is `\\boxed{..}`, after "answer is"/"Answer:", else the last number |
| regex_match | 1 when `?pattern=` (or the row's `pattern`/`regex` column) matches (`?mode=search|fullmatch`, `?ignore_case=true`) |
| contains | share of the reference strings found in the answer (case-insensitive unless `?case_sensitive=true`) |
| json_valid | 1 when the answer (code fences removed) parses as JSON (`?object=true`: a JSON object) |
| json_schema | 1 when it parses and validates against `?schema=` or the row's `schema`/`json_schema` column |
| length_penalty | 1 up to `?target=` (default 100) characters (`?unit=words`), then falling linearly to 0 at twice the target |
| code_tests | share of the row's unit tests (`tests`, `test_list`, ...) the answer's code passes, run in the sandbox |

OpenAI graders (`{"type": ...}` JSON, inline or in a file): `string_check` (eq, ne, like, ilike),
`text_similarity` (fuzzy_match, bleu, gleu, meteor, rouge_1..rouge_5, rouge_l), `python`
(`grade(sample, item)` in the sandbox), `score_model` (an LLM judge; the score within `range`,
default [0, 1]) and `multi` (named graders combined by `calculate_output`, e.g.
`"0.7 * correct + 0.3 * short"`). Templates use `{{ sample.output_text }}`, `{{ sample.output_json.x }}`
and `{{ item.<column> }}`.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import operator
import re
from collections import Counter
from typing import Any, Callable

from tuneloop.data.schema import REFERENCE_COLUMNS
from tuneloop.rewards.base import RewardFunction, Sample, Score, coerce



class GraderConfigError(ValueError):
    """A grader reference or JSON that cannot work, whatever the completion."""


def _flag(options: dict[str, str], name: str, default: bool = False) -> bool:
    value = options.get(name)
    return default if value is None else str(value).lower() in ("1", "true", "yes", "on")


def _float_opt(options: dict[str, str], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except ValueError:
        raise GraderConfigError(f"option {name}={options[name]!r} is not a number") from None


def reference(row: dict[str, Any], options: dict[str, str], grader: str) -> Any:
    col = options.get("column")
    if col:
        if col not in row:
            raise LookupError(f"builtin:{grader} reads the reference from column {col!r}, which this row does not "
                              f"have (columns: {', '.join(sorted(row)) or 'none'})")
        return row[col]
    for c in REFERENCE_COLUMNS:
        if c in row and row[c] is not None:
            return row[c]
    raise LookupError(f"builtin:{grader} needs a reference: add a column named one of "
                      f"{', '.join(REFERENCE_COLUMNS[:6])}, ... or pass ?column=NAME "
                      f"(this row has: {', '.join(sorted(row)) or 'no extra columns'})")


_PUNCT = re.compile(r"[^\w\s]")


def _norm(text: str, options: dict[str, str]) -> str:
    text = str(text).strip()
    if _flag(options, "normalize"):
        text = " ".join(_PUNCT.sub(" ", text.lower()).split())
    elif _flag(options, "ignore_case"):
        text = text.lower()
    return text


def exact_match(completion: str, row: dict[str, Any], options: dict[str, str]) -> float:
    ref = reference(row, options, "exact_match")
    refs = ref if isinstance(ref, list) else [ref]
    answer = _norm(completion, options)
    return float(any(answer == _norm(r, options) for r in refs))


_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"(?:answer\s*(?:is|:)|=)\s*\$?\s*(" + _NUMBER + r"(?:\s*/\s*\d+)?)", re.I)
_ANY_NUMBER = re.compile(r"(" + _NUMBER + r")(?:\s*/\s*(\d+))?")


def parse_number(text: str) -> float | None:
    """The number an answer gives: `\\boxed{..}`, then "answer is N" / "Answer: N", then the last
    number in the text. Thousands separators are dropped; "3/4" is 0.75."""
    text = str(text)
    for pattern in (_BOXED, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            value = _to_number(found[-1])
            if value is not None:
                return value
    matches = _ANY_NUMBER.findall(text)
    if not matches:
        return None
    num, den = matches[-1]
    return _to_number(f"{num}/{den}" if den else num)


def _to_number(text: str) -> float | None:
    text = text.replace(",", "").replace("$", "").strip()
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except (ValueError, ZeroDivisionError):
        m = _ANY_NUMBER.search(text)
        return _to_number(m.group(0)) if m and m.group(0) != text else None


def numeric_match(completion: str, row: dict[str, Any], options: dict[str, str]) -> Score:
    ref = reference(row, options, "numeric_match")
    target = ref if isinstance(ref, (int, float)) and not isinstance(ref, bool) else parse_number(str(ref))
    if target is None:
        raise ValueError(f"builtin:numeric_match: the reference {ref!r} is not a number")
    got = parse_number(completion)
    if got is None:
        return Score(0.0, {"parsed": 0.0})
    tol = _float_opt(options, "tolerance", 1e-6)
    rel = _float_opt(options, "relative", 0.0)
    ok = math.isclose(got, float(target), abs_tol=tol, rel_tol=rel)
    return Score(float(ok), {"parsed": 1.0})


def regex_match(completion: str, row: dict[str, Any], options: dict[str, str]) -> float:
    pattern = options.get("pattern") or row.get("pattern") or row.get("regex")
    if not pattern:
        raise GraderConfigError("builtin:regex_match needs ?pattern=REGEX or a 'pattern' column in the row")
    try:
        rx = re.compile(str(pattern), re.I if _flag(options, "ignore_case") else 0)
    except re.error as e:
        raise GraderConfigError(f"builtin:regex_match: invalid pattern {pattern!r}: {e}") from None
    text = completion.strip()
    mode = options.get("mode", "search")
    return float(bool(rx.fullmatch(text) if mode == "fullmatch" else rx.search(text)))


def contains(completion: str, row: dict[str, Any], options: dict[str, str]) -> Score:
    ref = options.get("text") or reference(row, options, "contains")
    refs = [str(r) for r in (ref if isinstance(ref, list) else [ref])]
    sensitive = _flag(options, "case_sensitive")
    hay = completion if sensitive else completion.lower()
    found = sum((r if sensitive else r.lower()) in hay for r in refs)
    return Score(found / len(refs) if refs else 0.0, {"found": float(found)})


_CODE_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?```\s*$", re.S)


def _strip_fences(text: str) -> str:
    m = _CODE_FENCE.match(text)
    return m.group(1) if m else text.strip()


def json_valid(completion: str, row: dict[str, Any], options: dict[str, str]) -> float:
    try:
        value = json.loads(_strip_fences(completion))
    except ValueError:
        return 0.0
    return float(isinstance(value, dict)) if _flag(options, "object") else 1.0


def json_schema(completion: str, row: dict[str, Any], options: dict[str, str]) -> Score:
    schema = options.get("schema") or row.get("schema") or row.get("json_schema")
    if schema is None:
        raise GraderConfigError("builtin:json_schema needs ?schema=JSON or a 'schema' column in the row")
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise GraderConfigError(f"builtin:json_schema: the schema is not valid JSON ({e})") from None
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a dependency
        raise GraderConfigError("builtin:json_schema needs the jsonschema package: pip install jsonschema") from None
    try:
        value = json.loads(_strip_fences(completion))
    except ValueError:
        return Score(0.0, {"valid_json": 0.0})
    try:
        jsonschema.validate(value, schema)
    except jsonschema.exceptions.SchemaError as e:
        raise GraderConfigError(f"builtin:json_schema: the schema is invalid: {e.message}") from None
    except jsonschema.exceptions.ValidationError:
        return Score(0.0, {"valid_json": 1.0})
    return Score(1.0, {"valid_json": 1.0})


def length_penalty(completion: str, row: dict[str, Any], options: dict[str, str]) -> Score:
    target = _float_opt(options, "target", float(row.get("target_length") or 100))
    if target <= 0:
        raise GraderConfigError("builtin:length_penalty: target must be positive")
    n = len(completion.split()) if options.get("unit") == "words" else len(completion)
    # full reward up to the target, then a linear fall to 0 at twice the target
    score = 1.0 if n <= target else max(0.0, 1.0 - (n - target) / target)
    return Score(score, {"length": float(n)})


BUILTINS: dict[str, Callable[[str, dict[str, Any], dict[str, str]], float | Score]] = {
    "exact_match": exact_match, "numeric_match": numeric_match, "regex_match": regex_match, "contains": contains,
    "json_valid": json_valid, "json_schema": json_schema, "length_penalty": length_penalty,
}
SANDBOXED_BUILTINS = ("code_tests",)


def builtin_names() -> list[str]:
    return sorted([*BUILTINS, *SANDBOXED_BUILTINS])


class BuiltinReward(RewardFunction):
    def __init__(self, name: str, options: dict[str, str], sandbox_factory: Callable[[], Any] | None = None):
        if name not in BUILTINS and name not in SANDBOXED_BUILTINS:
            raise GraderConfigError(f"unknown built-in grader {name!r}; built-ins: {', '.join(builtin_names())}")
        self.grader, self.options = name, dict(options)
        self.name = f"builtin:{name}"
        self._sandbox_factory = sandbox_factory
        self.in_sandbox = name in SANDBOXED_BUILTINS

    def score(self, samples: list[Sample]) -> list[Score]:
        if self.grader == "code_tests":
            timeout = _float_opt(self.options, "timeout", 5.0)
            return self._sandbox_factory().call({"kind": "code_tests"}, samples, timeout_s=timeout)
        fn = BUILTINS[self.grader]
        out = []
        for s in samples:
            try:
                value = fn(s.completion, s.row, self.options)
                out.append(value if isinstance(value, Score) else coerce(value))
            except GraderConfigError as e:
                out.append(Score.failed("config", str(e)))
            except (LookupError, ValueError, TypeError) as e:
                out.append(Score.failed("exception", str(e)))
        return out


# ---- text similarity (OpenAI text_similarity metrics) -------------------------------------------------
_TOKEN = re.compile(r"\w+", re.U)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: str, ref: str, n: int) -> float:
    """F1 of overlapping n-grams."""
    c, r = _ngrams(_tokens(candidate), n), _ngrams(_tokens(ref), n)
    overlap = sum((c & r).values())
    if not overlap:
        return 0.0
    p, rec = overlap / sum(c.values()), overlap / sum(r.values())
    return 2 * p * rec / (p + rec)


def rouge_l(candidate: str, ref: str) -> float:
    """F1 from the longest common subsequence of tokens."""
    a, b = _tokens(candidate), _tokens(ref)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def bleu(candidate: str, ref: str, max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing of the n-gram precisions (n > 1) and the brevity penalty."""
    c, r = _tokens(candidate), _tokens(ref)
    if not c or not r:
        return 0.0
    logs = []
    for n in range(1, max_n + 1):
        cn, rn = _ngrams(c, n), _ngrams(r, n)
        total = max(1, sum(cn.values()))
        match = sum((cn & rn).values())
        if n == 1 and match == 0:
            return 0.0
        logs.append(math.log((match + (n > 1)) / (total + (n > 1))))
    bp = 1.0 if len(c) > len(r) else math.exp(1 - len(r) / len(c))
    return bp * math.exp(sum(logs) / max_n)


def gleu(candidate: str, ref: str, max_n: int = 4) -> float:
    """Google-BLEU: min(precision, recall) over all 1..4-grams together."""
    c, r = _tokens(candidate), _tokens(ref)
    cn, rn = Counter(), Counter()
    for n in range(1, max_n + 1):
        cn.update(_ngrams(c, n))
        rn.update(_ngrams(r, n))
    if not cn or not rn:
        return 0.0
    match = sum((cn & rn).values())
    return min(match / sum(cn.values()), match / sum(rn.values()))


def meteor(candidate: str, ref: str) -> float:
    """METEOR with exact unigram matches: recall-weighted F-mean times a fragmentation penalty."""
    c, r = _tokens(candidate), _tokens(ref)
    if not c or not r:
        return 0.0
    used = [False] * len(r)
    align = []
    for i, w in enumerate(c):
        for j, v in enumerate(r):
            if not used[j] and v == w:
                used[j] = True
                align.append((i, j))
                break
    m = len(align)
    if not m:
        return 0.0
    p, rec = m / len(c), m / len(r)
    fmean = 10 * p * rec / (rec + 9 * p)
    chunks = 1 + sum(1 for (a, b), (x, y) in zip(align, align[1:]) if not (x == a + 1 and y == b + 1))
    return fmean * (1 - 0.5 * (chunks / m) ** 3)


def fuzzy_match(candidate: str, ref: str) -> float:
    return difflib.SequenceMatcher(None, candidate.strip(), ref.strip()).ratio()


SIMILARITY: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu, "meteor": meteor, "rouge_l": rouge_l,
    **{f"rouge_{n}": (lambda n: lambda a, b: rouge_n(a, b, n))(n) for n in range(1, 6)},
}


# ---- calculate_output: a safe arithmetic formula over named grader scores ---------------------------
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}
_FUNCS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
          "sqrt": math.sqrt, "log": math.log, "round": round, "clip": lambda x, lo, hi: max(lo, min(hi, x))}


def compile_formula(formula: str, names: set[str]) -> ast.Expression:
    """Parse `calculate_output` and check it uses only numbers, grader names, + - * / ** % // and
    min/max/abs/floor/ceil/exp/sqrt/log/round/clip."""
    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as e:
        raise GraderConfigError(f"calculate_output {formula!r} is not a formula: {e.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCS:
            raise GraderConfigError(f"calculate_output uses {node.id!r}, which is not one of the graders "
                                    f"({', '.join(sorted(names))})")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS):
            raise GraderConfigError(f"calculate_output may call only {', '.join(sorted(_FUNCS))}")
        if not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load,
                                 ast.USub, ast.UAdd, *_BINOPS)):
            raise GraderConfigError(f"calculate_output may not contain {type(node).__name__}")
    return tree


def eval_formula(tree: ast.Expression, values: dict[str, float]) -> float:
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return -ev(node.operand) if isinstance(node.op, ast.USub) else ev(node.operand)
        if isinstance(node, ast.Call):
            return _FUNCS[node.func.id](*[ev(a) for a in node.args])
        raise GraderConfigError(f"unsupported expression {ast.dump(node)}")

    return float(ev(tree))


# ---- OpenAI grader JSON -------------------------------------------------------------------------------
GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")


def _jinja():
    from jinja2 import ChainableUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


def template_context(s: Sample) -> dict[str, Any]:
    try:
        parsed = json.loads(_strip_fences(s.completion))
    except ValueError:
        parsed = None
    sample = {"output_text": s.completion, "output_json": parsed,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": s.completion}}]}
    return {"sample": sample, "item": {**s.row, "messages": s.prompt, "id": s.id}}


def check_grader(spec: Any, where: str = "grader") -> None:
    """Raise GraderConfigError when the JSON cannot describe a grader (before any sample is scored)."""
    if not isinstance(spec, dict):
        raise GraderConfigError(f"{where} must be a JSON object with a 'type'")
    kind = spec.get("type")
    if kind not in GRADER_TYPES:
        raise GraderConfigError(f"{where} has type {kind!r}; supported: {', '.join(GRADER_TYPES)}")
    need = {"string_check": ("input", "reference", "operation"), "text_similarity": ("input", "reference",
            "evaluation_metric"), "python": ("source",), "score_model": ("input", "model"),
            "multi": ("graders", "calculate_output")}[kind]
    missing = [k for k in need if k not in spec]
    if missing:
        raise GraderConfigError(f"{where} ({kind}) is missing {', '.join(missing)}")
    if kind == "string_check" and spec["operation"] not in ("eq", "ne", "like", "ilike"):
        raise GraderConfigError(f"{where}: operation must be eq, ne, like or ilike, got {spec['operation']!r}")
    if kind == "text_similarity" and spec["evaluation_metric"] not in SIMILARITY:
        extra = " (cosine needs an embeddings model, which tuneloop does not run)" \
            if spec["evaluation_metric"] == "cosine" else ""
        raise GraderConfigError(f"{where}: evaluation_metric {spec['evaluation_metric']!r} is not supported{extra}; "
                                f"use one of {', '.join(sorted(SIMILARITY))}")
    if kind == "python" and "def grade" not in spec["source"]:
        raise GraderConfigError(f"{where}: python source must define grade(sample, item)")
    if kind == "score_model" and spec.get("range") is not None:
        rng = spec["range"]
        if not (isinstance(rng, list) and len(rng) == 2 and rng[0] < rng[1]):
            raise GraderConfigError(f"{where}: range must be [low, high] with low < high, got {rng!r}")
    if kind == "multi":
        graders = spec["graders"]
        if not isinstance(graders, dict) or not graders:
            raise GraderConfigError(f"{where}: graders must be an object of named graders")
        for name, sub in graders.items():
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise GraderConfigError(f"{where}: grader name {name!r} must be an identifier to use in "
                                        "calculate_output")
            check_grader(sub, f"{where}.graders.{name}")
        compile_formula(spec["calculate_output"], set(graders))


class GraderReward(RewardFunction):
    """An OpenAI grader (any type) as a reward function."""

    def __init__(self, spec: dict[str, Any], sandbox_factory: Callable[[], Any] | None = None,
                 judge_factory: Callable[[str], Any] | None = None, label: str | None = None):
        check_grader(spec)
        self.spec = spec
        self.name = label or f"{spec['type']}:{spec.get('name') or 'grader'}"
        self._sandbox_factory, self._judge_factory = sandbox_factory, judge_factory
        self.in_sandbox = self._uses("python")
        self._subs = {n: GraderReward(g, sandbox_factory, judge_factory, label=n)
                      for n, g in spec.get("graders", {}).items()} if spec["type"] == "multi" else {}
        self._formula = compile_formula(spec["calculate_output"], set(self._subs)) if self._subs else None

    def _uses(self, kind: str, spec: dict[str, Any] | None = None) -> bool:
        spec = spec or self.spec
        return spec["type"] == kind or any(self._uses(kind, g) for g in (spec.get("graders") or {}).values())

    def score(self, samples: list[Sample]) -> list[Score]:
        kind = self.spec["type"]
        if kind == "python":
            target = {"kind": "source", "source": self.spec["source"], "function": "grade", "name": self.name}
            return self._sandbox_factory().call(target, samples)
        if kind == "score_model":
            return self._score_model(samples)
        if kind == "multi":
            return self._multi(samples)
        env = _jinja()
        out = []
        for s in samples:
            ctx = template_context(s)
            try:
                a = env.from_string(str(self.spec["input"])).render(ctx)
                b = env.from_string(str(self.spec["reference"])).render(ctx)
            except Exception as e:  # noqa: BLE001 - a template error is this sample's error
                out.append(Score.failed("config", f"{self.name}: template error: {e}"))
                continue
            if kind == "string_check":
                op = self.spec["operation"]
                value = {"eq": a == b, "ne": a != b, "like": b in a, "ilike": b.lower() in a.lower()}[op]
                out.append(Score(float(value)))
            else:
                out.append(Score(SIMILARITY[self.spec["evaluation_metric"]](a, b)))
        return out

    def _score_model(self, samples: list[Sample]) -> list[Score]:
        from tuneloop.rewards.judge import parse_score

        env = _jinja()
        lo, hi = (self.spec.get("range") or [0, 1])
        conversations = []
        for s in samples:
            ctx = template_context(s)
            msgs = []
            for m in self.spec["input"]:
                content = m.get("content")
                if isinstance(content, dict):
                    content = content.get("text", "")
                msgs.append({"role": m.get("role", "user"), "content": env.from_string(str(content)).render(ctx)})
            conversations.append(msgs)
        judge = self._judge_factory(self.spec["model"])
        params = self.spec.get("sampling_params") or {}
        answers = judge.complete(conversations, temperature=params.get("temperature"),
                                 max_tokens=params.get("max_completions_tokens"))
        out = []
        for ans in answers:
            if isinstance(ans, Exception):
                out.append(Score.failed("http", f"judge {judge.name}: {ans}"))
                continue
            value = parse_score(ans, scale=(float(lo), float(hi)), normalise=False)
            if value is None:
                out.append(Score.failed("unparseable", f"judge answer has no score in [{lo}, {hi}]: {ans[:120]!r}"))
            else:
                out.append(Score(value))
        return out

    def _multi(self, samples: list[Sample]) -> list[Score]:
        per = {name: sub.score(samples) for name, sub in self._subs.items()}
        out = []
        for i in range(len(samples)):
            failed = next((per[n][i] for n in per if not per[n][i].ok), None)
            if failed is not None:
                out.append(failed)
                continue
            values = {n: float(per[n][i].value) for n in per}
            try:
                total = eval_formula(self._formula, values)
            except (ArithmeticError, ValueError) as e:
                out.append(Score.failed("exception", f"calculate_output failed: {type(e).__name__}: {e}"))
                continue
            out.append(coerce({"aggregate_reward_score": total,
                               "metrics_list": [{"name": n, "value": v} for n, v in values.items()]},
                              what="calculate_output gave"))
        return out
