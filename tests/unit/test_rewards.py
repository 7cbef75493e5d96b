"""Graders, reward references, score parsing, reward prompts, HTTP endpoints and the step engine:
each against its documented behaviour. Pure and fast except the HTTP tests (a real local server)."""

from __future__ import annotations

import json
import threading

import pytest

from tuneloop.rewards.base import Sample, Score, coerce
from tuneloop.rewards.engine import RewardEngine, RewardFailure
from tuneloop.rewards.functions import RefError, RewardContext, parse_ref
from tuneloop.rewards.graders import (GraderConfigError, GraderReward, bleu, check_grader, gleu, meteor, parse_number,
                                      rouge_l, rouge_n)
from tuneloop.rewards.judge import JudgeReward, parse_judge_ref, parse_score
from tuneloop.rewards.prompts import PromptError, Renderer, load_prompt

from tests.stubs import JsonHandler, serve

P = [{"role": "user", "content": "What is 2 + 2?"}]


def one(ref: str, completion: str, row: dict | None = None, **ctx_kwargs) -> Score:
    with RewardContext(**ctx_kwargs) as ctx:
        return ctx.resolve(ref).score([Sample("s0", P, completion, dict(row or {}))])[0]


# ---- built-in graders ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ref, completion, row, expected", [
    ("builtin:exact_match", " Paris \n", {"answer": "Paris"}, 1.0),
    ("builtin:exact_match", "paris", {"answer": "Paris"}, 0.0),
    ("builtin:exact_match?ignore_case=true", "paris", {"answer": "Paris"}, 1.0),
    ("builtin:exact_match?normalize=true", "Paris!", {"ground_truth": "paris"}, 1.0),
    ("builtin:exact_match", "B", {"answer": ["A", "B"]}, 1.0),
    ("builtin:exact_match?column=gold", "x", {"answer": "y", "gold": "x"}, 1.0),
    ("builtin:numeric_match", "The answer is 42.", {"answer": "42"}, 1.0),
    ("builtin:numeric_match", "I think 41, no wait: 42", {"answer": 42}, 1.0),
    ("builtin:numeric_match", "so \\boxed{1,024} tokens, 7 more", {"answer": "1024"}, 1.0),
    ("builtin:numeric_match", "3.15", {"answer": "3.14"}, 0.0),
    ("builtin:numeric_match?tolerance=0.01", "3.145", {"answer": "3.14"}, 1.0),
    ("builtin:numeric_match?relative=0.05", "103", {"answer": "100"}, 1.0),
    ("builtin:numeric_match", "3/4", {"answer": "0.75"}, 1.0),
    ("builtin:numeric_match", "no number here", {"answer": "1"}, 0.0),
    ("builtin:regex_match?pattern=^[A-D]$&mode=fullmatch", " C ", {}, 1.0),
    ("builtin:regex_match?pattern=^[A-D]$&mode=fullmatch", "C.", {}, 0.0),
    ("builtin:regex_match", "order #123", {"pattern": r"#\d+"}, 1.0),
    ("builtin:regex_match?pattern=yes&ignore_case=true", "YES", {}, 1.0),
    ("builtin:contains", "The capital is PARIS.", {"answer": "paris"}, 1.0),
    ("builtin:contains?case_sensitive=true", "The capital is PARIS.", {"answer": "paris"}, 0.0),
    ("builtin:contains", "paris and rome", {"answer": ["Paris", "Rome", "Oslo", "Bern"]}, 0.5),
    ("builtin:json_valid", '{"a": [1, 2]}', {}, 1.0),
    ("builtin:json_valid", '```json\n{"a": 1}\n```', {}, 1.0),
    ("builtin:json_valid", "{'a': 1}", {}, 0.0),
    ("builtin:json_valid?object=true", "[1, 2]", {}, 0.0),
    ("builtin:json_schema", '{"name": "x", "age": 3}',
     {"schema": {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}}, 1.0),
    ("builtin:json_schema", '{"name": "x", "age": "3"}',
     {"schema": {"type": "object", "properties": {"age": {"type": "integer"}}}}, 0.0),
    ("builtin:json_schema", "not json", {"schema": {"type": "object"}}, 0.0),
    ("builtin:length_penalty?target=10", "x" * 10, {}, 1.0),
    ("builtin:length_penalty?target=10", "x" * 15, {}, 0.5),
    ("builtin:length_penalty?target=10", "x" * 30, {}, 0.0),
    ("builtin:length_penalty?target=2&unit=words", "one two three", {}, 0.5),
])
def test_builtin_graders(ref, completion, row, expected):
    s = one(ref, completion, row)
    assert s.error is None, s.error
    assert s.value == pytest.approx(expected)


def test_builtin_metrics_and_config_errors():
    assert one("builtin:numeric_match", "42", {"answer": 42}).metrics == {"parsed": 1.0}
    assert one("builtin:json_schema", "[]", {"schema": {"type": "object"}}).metrics == {"valid_json": 1.0}
    assert one("builtin:length_penalty", "abc").metrics == {"length": 3.0}
    missing = one("builtin:exact_match", "x", {"question": "q"})
    assert missing.value is None and "needs a reference" in missing.error.message and "question" in missing.error.message
    unknown = one("builtin:nope", "x")
    assert unknown.error.kind == "config" and "exact_match" in unknown.error.message
    bad_regex = one("builtin:regex_match?pattern=(", "x")
    assert bad_regex.error.kind == "config" and "invalid pattern" in bad_regex.error.message
    no_schema = one("builtin:json_schema", "{}")
    assert "needs ?schema" in no_schema.error.message


def test_parse_number():
    assert parse_number("Answer: -3.5") == -3.5
    assert parse_number("1,234,567 apples") == 1234567
    assert parse_number("x = 7") == 7
    assert parse_number("1e3") == 1000
    assert parse_number("nothing") is None


# ---- OpenAI graders -------------------------------------------------------------------------------------
def grader(**spec) -> str:
    return json.dumps({"name": "g", **spec})


@pytest.mark.parametrize("op, output, ref, expected", [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("ne", "Rome", "Paris", 1.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0), ("ilike", "IT IS PARIS", "paris", 1.0),
])
def test_string_check(op, output, ref, expected):
    g = grader(type="string_check", input="{{ sample.output_text }}", reference="{{ item.answer }}", operation=op)
    assert one(g, output, {"answer": ref}).value == expected


def test_text_similarity_metrics():
    assert rouge_n("the cat sat", "the cat sat", 1) == 1.0
    assert rouge_n("the cat", "the cat sat down", 1) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert rouge_n("the cat", "a dog", 2) == 0.0
    assert rouge_l("a b c d", "a x c d") == pytest.approx(0.75)
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert 0.0 < bleu("the cat sat on a mat", "the cat sat on the mat") < 1.0
    assert gleu("a b", "a b c d") == pytest.approx(3 / 10)  # 3 n-grams match; the reference has 10
    assert meteor("a b c", "a b c") > 0.95 and meteor("x", "a b c") == 0.0
    for metric, lo in [("fuzzy_match", 0.8), ("bleu", 0.3), ("rouge_l", 0.8), ("meteor", 0.5), ("gleu", 0.5)]:
        g = grader(type="text_similarity", input="{{ sample.output_text }}", reference="{{ item.answer }}",
                   evaluation_metric=metric)
        assert one(g, "the quick brown fox jumps", {"answer": "the quick brown fox jumped"}).value >= lo, metric


def test_python_grader_runs_in_the_sandbox():
    src = ("import os\n"
           "def grade(sample, item):\n"
           "    assert 'SECRET_KEY' not in os.environ\n"
           "    return float(sample['output_text'].strip() == item['answer']) + 0.5 * (sample['output_json'] == 4)\n")
    g = grader(type="python", source=src)
    import os

    os.environ["SECRET_KEY"] = "x"
    try:
        assert one(g, "4", {"answer": "4"}).value == 1.5
        assert one(g, "5", {"answer": "4"}).value == 0.0
    finally:
        del os.environ["SECRET_KEY"]


def test_multi_grader_with_calculate_output():
    g = grader(type="multi", calculate_output="0.7 * correct + 0.3 * max(0, 1 - short)", graders={
        "correct": {"type": "string_check", "name": "correct", "input": "{{ sample.output_text }}",
                    "reference": "{{ item.answer }}", "operation": "eq"},
        "short": {"type": "python", "name": "short", "source": "def grade(sample, item):\n"
                                                               "    return len(sample['output_text']) / 10\n"},
    })
    s = one(g, "four", {"answer": "four"})
    assert s.value == pytest.approx(0.7 + 0.3 * 0.6)
    assert s.metrics == {"correct": 1.0, "short": pytest.approx(0.4)}
    assert one(g, "five", {"answer": "four"}).value == pytest.approx(0.3 * 0.6)


def test_score_model_grader_uses_a_judge():
    class FakeJudge:
        name = "fake"

        def complete(self, conversations, temperature=None, max_tokens=None):
            return ["Score: 4" if "good" in c[-1]["content"] else "hmm" for c in conversations]

    spec = {"type": "score_model", "name": "judge", "model": "fake", "range": [1, 5],
            "input": [{"role": "user", "content": "Rate 1-5: {{ sample.output_text }}"}]}
    g = GraderReward(spec, judge_factory=lambda model: FakeJudge())
    good, bad = g.score([Sample("a", P, "good answer"), Sample("b", P, "bad")])
    assert good.value == 4.0 and bad.error.kind == "unparseable"


@pytest.mark.parametrize("spec, message", [
    ({"type": "nope"}, "supported"),
    ({"type": "string_check", "input": "a", "reference": "b", "operation": "regex"}, "eq, ne, like or ilike"),
    ({"type": "text_similarity", "input": "a", "reference": "b", "evaluation_metric": "cosine"}, "embeddings"),
    ({"type": "python", "source": "def other(): pass"}, "grade(sample, item)"),
    ({"type": "multi", "graders": {"a": {"type": "string_check", "input": "a", "reference": "b", "operation": "eq"}},
      "calculate_output": "a + b"}, "'b', which is not one of the graders"),
    ({"type": "multi", "graders": {"a": {"type": "string_check", "input": "a", "reference": "b", "operation": "eq"}},
      "calculate_output": "__import__('os').system('x')"}, "may call only"),
    ({"type": "multi", "graders": {"a": {"type": "string_check", "input": "a", "reference": "b", "operation": "eq"}},
      "calculate_output": "a.real"}, "may not contain Attribute"),
])
def test_invalid_graders_are_rejected(spec, message):
    with pytest.raises(GraderConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_grader(spec)
    assert message.split("'")[0] in one(json.dumps(spec), "x").error.message


def test_grader_from_a_file(tmp_path):
    path = tmp_path / "grader.json"
    path.write_text(grader(type="string_check", input="{{ sample.output_text }}", reference="4", operation="eq"))
    assert one(str(path), "4").value == 1.0
    assert one("grader.json", "4", base_dir=tmp_path).value == 1.0


# ---- return values, references --------------------------------------------------------------------------
def test_coerce_return_values():
    assert coerce(0.5).value == 0.5 and coerce(True).value == 1.0 and coerce(3).value == 3.0
    item = coerce({"id": "1", "aggregate_reward_score": 0.25,
                   "metrics_list": [{"name": "acc", "value": 1, "type": "Metric"}, {"name": "bad", "value": "x"}]})
    assert item.value == 0.25 and item.metrics == {"acc": 1.0}
    assert coerce(float("nan")).error.kind == "nan"
    assert coerce(float("inf")).error.kind == "nan"
    assert coerce("0.9").error.kind == "type" and "str '0.9'" in coerce("0.9").error.message
    assert coerce(None).error.kind == "type"
    assert coerce({"score": 1}).error.kind == "type"


@pytest.mark.parametrize("ref, kind, value, function", [
    ("builtin:exact_match", "builtin", "exact_match", None),
    ("rewards/score.py:reward", "file", "rewards/score.py", "reward"),
    ("my_pkg.rewards:score", "module", "my_pkg.rewards", "score"),
    ("https://rewards.example.com/score", "http", "https://rewards.example.com/score", None),
    ('{"type": "string_check"}', "grader", '{"type": "string_check"}', None),
    ("graders/g.json", "grader", "graders/g.json", None),
    ("Builtin.Helpfulness", "prompt", "Builtin.Helpfulness", None),
    ("judge.txt", "prompt", "judge.txt", None),
    ("Rate this answer: {{ completion }}", "prompt", "Rate this answer: {{ completion }}", None),
    ("math-grader", "evaluator", "math-grader", None),
    ("math-grader@v3", "evaluator", "math-grader@v3", None),
])
def test_parse_ref(ref, kind, value, function):
    r = parse_ref(ref)
    assert (r.kind, r.value, r.function) == (kind, value, function)


def test_parse_ref_options_and_errors():
    assert parse_ref("builtin:numeric_match?tolerance=0.1&column=y").options == {"tolerance": "0.1", "column": "y"}
    with pytest.raises(RefError):
        parse_ref("bad/ref:x:y")
    missing = one("nowhere.py:f", "x")
    assert missing.error.kind == "config" and "not found" in missing.error.message
    assert "No evaluator named" in one("unknown-eval", "x", evaluator_lookup=lambda ref: None).error.message


# ---- judges and reward prompts ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("7", 0.7), ("7.5", 0.75), ("Score: 7/10", 0.7), ("score: 8", 0.8), ('{"score": 9, "reason": "ok"}', 0.9),
    ("```json\n{\"rating\": 6}\n```", 0.6), ("Rating: 4 out of 5", 0.8), ("I'd give it [[3]].", 0.3),
    ("The response is fine. 8/10", 0.8), ("**10**", 1.0), ("It deserves a 6.", 0.6),
    ("Score: 12", None), ("no idea", None), ("between 3 and 4", None), ("-1", None), ("", None),
])
def test_parse_score(text, expected):
    got = parse_score(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_parse_score_scales():
    assert parse_score("3", scale=(1, 5)) == pytest.approx(0.5)
    assert parse_score("3", scale=(1, 5), normalise=False) == 3.0
    assert parse_score("0.8", scale=(0, 1)) == pytest.approx(0.8)
    assert parse_judge_ref("openai:gpt-4o-mini@http://127.0.0.1:9/v1") == ("openai", "gpt-4o-mini", "http://127.0.0.1:9/v1")
    assert parse_judge_ref("tuneloop/tiny-qwen3") == ("local", "tuneloop/tiny-qwen3", None)


def test_reward_prompts_render_variables_and_catch_typos(tmp_path):
    s = Sample("1", P, "4", {"answer": "4", "topic": "math"})
    text = Renderer(load_prompt("Builtin.Correctness")).render(s)
    assert "What is 2 + 2?" in text and "Reference answer:\n4" in text and "Score: N" in text
    assert "Reference answer" not in Renderer(load_prompt("Builtin.Correctness")).render(Sample("1", P, "4", {}))
    for name in ("Helpfulness", "Harmlessness", "Summarize", "Conciseness"):
        assert "Response" in Renderer(load_prompt(f"Builtin.{name}")).render(s) or name == "Summarize"
    custom = load_prompt("{# scale: 1-5 #}On {{ topic }}: {{ prompt }} -> {{ model_output }} (gt {{ ground_truth }})")
    assert custom.scale == (1.0, 5.0)
    assert Renderer(custom).render(s) == "On math: What is 2 + 2? -> 4 (gt 4)"
    with pytest.raises(PromptError, match="'toppic' is undefined"):
        Renderer(load_prompt("{{ toppic }} {{ completion }}")).render(s)
    with pytest.raises(PromptError, match="never shows the judge the answer"):
        load_prompt("Rate {{ prompt }}")
    with pytest.raises(PromptError, match="not a valid template"):
        load_prompt("{{ completion ")
    with pytest.raises(PromptError, match="Builtin.Helpfulness"):
        load_prompt("Builtin.Nope")
    (tmp_path / "judge.txt").write_text("Grade {{ completion }}")
    assert load_prompt("judge.txt", tmp_path).name == "judge.txt"


def test_judge_reward_caches_and_counts_unparseable():
    calls = []

    class FakeJudge:
        name = "fake"

        def complete(self, conversations, temperature=None, max_tokens=None):
            calls.extend(conversations)
            return ["Score: 9" if "yes" in c[0]["content"] else "I cannot grade this" for c in conversations]

        def close(self):
            pass

    reward = JudgeReward(load_prompt("Builtin.Helpfulness"), FakeJudge())
    first = reward.score([Sample("a", P, "yes"), Sample("b", P, "yes"), Sample("c", P, "no")])
    assert [s.value for s in first] == [0.9, 0.9, None] and first[2].error.kind == "unparseable"
    # the same (prompt, completion) is asked once; an answer without a score is asked once more
    assert len(calls) == 3 and reward.retried == 1
    reward.score([Sample("d", P, "yes")])
    assert len(calls) == 3 and reward.cache_hits == 2 and reward.unparseable == 1


# ---- HTTP endpoints ----------------------------------------------------------------------------------------
class _Handler(JsonHandler):
    mode = "plain"
    hits = 0
    failed: set = set()          # flaky: the batches already refused once
    lock = threading.Lock()      # batches may arrive at once: count and decide atomically

    def do_POST(self):
        items = self.read_json()
        batch = tuple(it["id"] for it in items)
        with self.lock:
            type(self).hits += 1
            first = batch not in self.failed
            self.failed.add(batch)
        if self.mode == "flaky" and first:   # each batch's first try fails: a retry per batch
            self.send_response(503)
            self.end_headers()
            return
        if self.mode == "broken":
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"bad request")
            return
        out = [{"id": it["id"], "aggregate_reward_score": float(it["completion"] == it["answer"]),
                "metrics_list": [{"name": "length", "value": len(it["completion"]), "type": "Metric"}]}
               for it in items]
        self.send_json({"statusCode": 200, "body": json.dumps(out)} if self.mode in ("lambda", "flaky") else out)


@pytest.fixture
def endpoint():
    with serve(_Handler) as url:
        yield f"{url}/reward"


@pytest.mark.parametrize("mode", ["plain", "lambda", "flaky"])
def test_http_endpoint(endpoint, mode):
    from tuneloop.rewards.http import HttpReward

    _Handler.mode, _Handler.hits, _Handler.failed = mode, 0, set()
    fn = HttpReward(endpoint, batch_size=3, backoff_s=0.01)
    samples = [Sample(str(i), P, c, {"answer": "4"}) for i, c in enumerate(["4", "5", "4", "44", "4"])]
    scores = fn.score(samples)
    fn.close()
    assert [s.value for s in scores] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert scores[3].metrics == {"length": 2.0}
    assert _Handler.hits == (4 if mode == "flaky" else 2)  # 2 batches; flaky retries each once


def test_http_endpoint_errors(endpoint):
    from tuneloop.rewards.http import HttpReward

    _Handler.mode = "broken"
    [s] = HttpReward(endpoint, retries=1, backoff_s=0.01).score([Sample("1", P, "4", {"answer": "4"})])
    assert s.error.kind == "http" and "HTTP 400" in s.error.message
    [s] = HttpReward("http://127.0.0.1:9/none", retries=1, backoff_s=0.01, timeout_s=2).score([Sample("1", P, "4")])
    assert s.error.kind == "http" and "after 2 attempts" in s.error.message


# ---- the step engine ------------------------------------------------------------------------------------------
def test_engine_routes_rows_excludes_failures_and_records_each_error_once():
    events = []
    with RewardContext() as ctx:
        engine = RewardEngine(ctx, "builtin:exact_match", threshold=0.5,
                              on_event=lambda level, msg, data: events.append((level, msg, data)))
        rows = [{"answer": "4"}, {"answer": "4", "reward_model": "builtin:numeric_match"}, {}, {}]
        samples = [Sample(str(i), P, c, dict(r)) for i, (c, r) in enumerate(zip(["4", "4.0", "x", "y"], rows))]
        assert engine.score(samples) == [1.0, 1.0, None, None]
        assert len(events) == 1 and "needs a reference" in events[0][1] and events[0][2]["kind"] == "exception"
        assert engine.errors[next(iter(engine.errors))] == 2 and engine.last_metrics["reward/failed"] == 0.5
        samples = [Sample(str(i), P, "x", {}) for i in range(3)] + [Sample("ok", P, "4", {"answer": "4"})]
        with pytest.raises(RewardFailure, match=r"builtin:exact_match failed on 3 of 4 samples in step 2.*50%"):
            engine.score(samples)
        assert len(events) == 1
