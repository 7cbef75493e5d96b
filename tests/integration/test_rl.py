"""RLVR and RLAIF really train: on a verifiable task, the built-in tiny model warm-started by a short
SFT answers more held-out prompts correctly after GRPO, whether the reward is a built-in grader,
a Python file (in the sandbox), an HTTP endpoint or an LLM judge behind the OpenAI API; a local
judge model works too. Broken rewards are recorded and the job goes on, or fails clearly past the
threshold. Built-in tiny model, real TRL, in-process jobs (one TRL import for the session).

The task (bundled for `tuneloop demo`): "Please copy the word gold." -> "gold" (4 colour words, 200
phrasings). The warm start is SFT on 8 examples for 12 steps; RL runs 30 steps of 4 prompts x 8
completions on 128 other rows; held-out: 64 rows never trained on.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA
from tests.stubs import JsonHandler, chat_completion, serve

pytestmark = pytest.mark.slow

COLOURS = ["red", "blue", "green", "gold"]
RL_HP = {"max_steps": 30}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO_DATA / name).read_text().splitlines() if line.strip()]


# bundled with the demo (tuneloop demo's RLVR stage runs the same task)
TRAIN, HELD, SFT = _rows("rlvr.jsonl"), _rows("rlvr_heldout.jsonl"), _rows("rlvr_warmstart.jsonl")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def warm_start(tmp_path_factory, models_dir):
    """A LoRA adapter from a short SFT on 8 examples of the answer format (its own TUNELOOP_HOME)."""
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.service.runner import run_job
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    root = tmp_path_factory.mktemp("warm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELOOP_HOME", str(root / "home"))
        settings = load_settings()
        svc = JobService(open_store(settings.database_url), settings)
        prep = svc.prepare(TuneRequest(technique="sft", dataset=str(write_jsonl(root / "sft.jsonl", SFT)),
                                       hyperparameters={"max_steps": 12}))
        job = svc.submit(prep, launch=False).job
        assert run_job(svc.store, job["id"]) == "completed"
        return svc.get(job["id"])["output_path"]


def held_out_accuracy(models_dir, adapter=None, full=None) -> float:
    from tuneloop.evaluation.quick import generate, load_for_eval
    from tuneloop.models.builtin import ensure_builtin

    model, tok = load_for_eval(full or str(ensure_builtin("tuneloop/tiny-qwen3", models_dir)), adapter)
    answers = generate(model, tok, [r["prompt"][0]["content"] for r in HELD], max_new_tokens=6)
    return sum(a.strip() == r["answer"] for a, r in zip(answers, HELD)) / len(HELD)


@pytest.fixture(scope="module")
def before(warm_start, models_dir):
    return held_out_accuracy(models_dir, warm_start)


def rl_job(technique: str, dataset: Path, *, expect: str = "completed", **kwargs) -> tuple[dict, list[dict]]:
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.service.runner import run_job
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    svc = JobService(open_store(settings.database_url), settings)
    prep = svc.prepare(TuneRequest(technique=technique, dataset=str(dataset), **kwargs))
    job = svc.submit(prep, launch=False).job
    state = run_job(svc.store, job["id"])
    job = svc.get(job["id"])
    assert state == expect, job["error"]
    return job, svc.store.list_events(job["id"])


def step_metrics(events: list[dict]) -> list[dict]:
    return [e["data"] for e in events if e["type"] == "metrics" and "reward" in (e["data"] or {})]


def test_rlvr_with_a_builtin_grader(home, warm_start, before, models_dir):
    job, events = rl_job("rlvr", write_jsonl(home.parent / "train.jsonl", TRAIN), model=warm_start,
                         reward_function="builtin:exact_match", hyperparameters=RL_HP,
                         validation_dataset=str(write_jsonl(home.parent / "held.jsonl", HELD)))
    after = held_out_accuracy(models_dir, job["output_path"])
    print(f"RLVR builtin:exact_match, held-out exact match: {before:.3f} -> {after:.3f}; "
          f"auto-evaluation on the same rows: eval_reward {job['metrics']['eval_reward']:.3f}")
    assert after >= before + 0.15 and after >= 0.8
    # the job's own auto-evaluation (greedy answers to the validation rows, scored by its reward) agrees
    assert job["metrics"]["eval_reward"] == pytest.approx(after, abs=0.05) and job["metrics"]["eval_rows"] == 64
    steps = step_metrics(events)
    assert len(steps) == 30 and {"reward", "reward_std", "kl", "completions/mean_length",
                                 "completions/clipped_ratio", "reward/failed"} <= set(steps[0])
    first, last = sum(s["reward"] for s in steps[:5]) / 5, sum(s["reward"] for s in steps[-5:]) / 5
    assert last > first
    plan = json.loads((Path(job["job_dir"]) / "plan.json").read_text())
    assert plan["num_generations"] == 8 and plan["per_device_batch"] % 8 == 0
    assert plan["max_response_length"] < 32 and any("longest reference answer" in n for n in plan["notes"])
    out = Path(job["output_path"])
    assert (out / "adapter_config.json").is_file() and not (out / "ref").exists()  # only the trained adapter
    assert job["metrics"]["reward_failed"] == 0 and "final_reward" in job["metrics"]


def test_rlvr_with_a_file_function_in_the_sandbox(home, warm_start, before, models_dir, monkeypatch, tmp_path):
    (tmp_path / "my_reward.py").write_text(textwrap.dedent("""
        import os

        def score(completion, answer, prompt):
            assert "HF_TOKEN" not in os.environ and prompt[0]["role"] == "user"
            words = completion.strip().split()
            return {"aggregate_reward_score": float(words == [answer]),
                    "metrics_list": [{"name": "said_a_colour", "value": float(bool(words) and words[0] in
                                      ("red", "blue", "green", "gold")), "type": "Metric"}]}
    """))
    monkeypatch.chdir(tmp_path)  # relative references resolve from where the job was submitted
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    job, events = rl_job("rlvr", write_jsonl(tmp_path / "train.jsonl", TRAIN), model=warm_start,
                         reward_function="my_reward.py:score", hyperparameters=RL_HP)
    after = held_out_accuracy(models_dir, job["output_path"])
    print(f"RLVR my_reward.py:score (sandbox), held-out exact match: {before:.3f} -> {after:.3f}")
    assert after >= before + 0.15 and after >= 0.8
    steps = step_metrics(events)
    assert all("said_a_colour" in s for s in steps) and steps[-1]["said_a_colour"] > 0.9


class RewardEndpoint(JsonHandler):
    """A reward endpoint in the seed's Lambda shape: {statusCode, body: "[{id, aggregate_reward_score, ...}]"}."""

    calls = 0

    def do_POST(self):
        type(self).calls += 1
        items = self.read_json()
        results = [{"id": it["id"], "aggregate_reward_score": float(it["completion"].strip() == it["answer"]),
                    "metrics_list": [{"name": "chars", "value": len(it["completion"]), "type": "Metric"}]}
                   for it in items]
        self.send_json({"statusCode": 200, "body": json.dumps(results)})


@pytest.fixture
def reward_server():
    with serve(RewardEndpoint) as url:
        yield f"{url}/reward"


def test_rlvr_full_rank_with_an_http_endpoint(home, warm_start, before, models_dir, reward_server):
    """Full-rank from the SFT adapter (merged first), rewards from a local HTTP endpoint."""
    RewardEndpoint.calls = 0
    job, events = rl_job("rlvr", write_jsonl(home.parent / "train.jsonl", TRAIN), model=warm_start,
                         training_type="full-rank", reward_function=reward_server, hyperparameters=RL_HP)
    assert job["output_type"] == "full-model"
    after = held_out_accuracy(models_dir, full=job["output_path"])
    print(f"RLVR full-rank, HTTP endpoint, held-out exact match: {before:.3f} -> {after:.3f}")
    assert after >= before + 0.15 and after >= 0.8
    assert RewardEndpoint.calls >= 30 and "chars" in step_metrics(events)[0]


# ---- RLAIF --------------------------------------------------------------------------------------------
class RuleJudge(JsonHandler):
    """An OpenAI-compatible chat endpoint whose 'model' is a rule: Builtin.Correctness prompts are
    scored 10 when the response equals the reference answer, 0 otherwise, in varied real-judge
    formats. One request in 17 gets an answer with no score (asked again, it scores), and one judge
    prompt in 100 never gets a score (counted and excluded)."""

    requests: list[str] = []

    def do_POST(self):
        body = self.read_json()
        assert self.path == "/v1/chat/completions" and self.headers["Authorization"] == "Bearer judge-key"
        text = body["messages"][-1]["content"]
        type(self).requests.append(text)
        response = text.split("Response:\n", 1)[1].split("\n\n", 1)[0].strip()
        reference = text.split("Reference answer:\n", 1)[1].split("\n\n", 1)[0].strip()
        n = len(type(self).requests)
        good = response == reference
        hopeless = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 100 == 0
        answer = ("I am not able to grade this." if hopeless or n % 17 == 0 else
                  [f"Score: {10 if good else 0}", json.dumps({"score": 10 if good else 0, "reason": "rule"}),
                   f"{10 if good else 1}/10", f"{10 if good else 0}"][n % 4])
        self.send_json(chat_completion(body["model"], answer, n))


@pytest.fixture
def judge_server(monkeypatch):
    monkeypatch.setenv("TUNELOOP_JUDGE_API_KEY", "judge-key")
    RuleJudge.requests = []
    with serve(RuleJudge) as url:
        yield f"{url}/v1"


def test_rlaif_with_a_judge_behind_the_openai_api(home, warm_start, before, models_dir, judge_server):
    job, events = rl_job("rlaif", write_jsonl(home.parent / "train.jsonl", TRAIN), model=warm_start,
                         reward_prompt="Builtin.Correctness", judge_model=f"openai:rule-judge@{judge_server}",
                         # GRPO repeats completions: one hopeless judge prompt can hit 8 of a step's 32 samples
                         hyperparameters={**RL_HP, "reward_failure_threshold": 0.5})
    after = held_out_accuracy(models_dir, job["output_path"])
    print(f"RLAIF Builtin.Correctness with an OpenAI-API judge, held-out exact match: {before:.3f} -> {after:.3f}; "
          f"{len(RuleJudge.requests)} judge calls for {30 * 32} completions")
    assert after >= before + 0.15
    steps = step_metrics(events)
    assert sum(s["judge/unparseable"] for s in steps) > 0  # counted ...
    unparseable = [e for e in events if "(unparseable)" in e["message"]]
    assert len(unparseable) == 1 and unparseable[0]["level"] == "warn"  # ... and logged once
    assert len(RuleJudge.requests) < 30 * 32  # cached per (prompt, completion)


def test_rlaif_with_a_local_judge_model(home, warm_start, models_dir, tmp_path):
    """A judge trained by tuneloop itself (SFT: 'gold' is worth 10, other colours 2) steers the policy
    towards answering gold."""
    template = "Rate: {{ completion }}"
    judge_rows = [{"prompt": f"Rate: {c}", "completion": f"Score: {10 if c == 'gold' else 2}"} for c in COLOURS] * 2
    judge, _ = rl_job("sft", write_jsonl(tmp_path / "judge.jsonl", judge_rows), hyperparameters={"max_steps": 25})
    rows = [dict(r, answer=None) for r in TRAIN[:64]]
    job, events = rl_job("rlaif", write_jsonl(tmp_path / "rows.jsonl", rows), reward_prompt=template, model=warm_start,
                         judge_model=judge["output_path"],
                         hyperparameters={"max_steps": 8, "max_response_length": 4, "learning_rate": 2e-3})
    steps = step_metrics(events)
    assert all(s["judge/unparseable"] == 0 for s in steps) and all(s["reward/failed"] == 0 for s in steps)
    print("RLAIF local judge, reward per step:", [round(s["reward"], 3) for s in steps])
    assert steps[-1]["reward"] > steps[0]["reward"]


# ---- broken rewards during training -----------------------------------------------------------------------
BROKEN = textwrap.dedent("""
    import math, time

    def flaky(completion, answer, kind=None):
        if kind == "raise":
            raise ValueError("no colour for " + answer)
        if kind == "string":
            return "great"
        if kind == "nan":
            return math.nan
        if kind == "hang":
            while True:
                pass
        if kind == "memory":
            return len(bytearray(10 * 2**30))
        return float(completion.strip() == answer)

    def always(completion):
        raise RuntimeError("the grader is broken")
""")


def test_broken_rewards_are_excluded_and_recorded_once(home, warm_start, tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN)
    kinds = ["raise", "string", "nan", "hang", "memory"]
    rows = [dict(r, kind=kinds[i] if i < len(kinds) else None) for i, r in enumerate(TRAIN[:12])]
    job, events = rl_job("rlvr", write_jsonl(tmp_path / "rows.jsonl", rows), model=warm_start,
                         reward_function=f"{tmp_path / 'broken.py'}:flaky", skip_reward_validation=True,
                         hyperparameters={"max_steps": 3, "max_response_length": 4, "reward_timeout": 0.5,
                                          "reward_failure_threshold": 0.75})
    errors = [e for e in events if e["message"].startswith("reward ") and e["level"] == "error"]
    kinds_seen = {e["data"]["kind"] for e in errors}
    assert kinds_seen == {"exception", "type", "nan", "timeout", "memory"}, [e["message"] for e in errors]
    assert len(errors) == 5  # one event per distinct error, however many samples hit it
    raised = next(e for e in errors if e["data"]["kind"] == "exception")
    assert "ValueError: no colour for" in raised["message"] and 'broken.py", line' in raised["data"]["traceback"]
    assert job["metrics"]["reward_failed"] == 5 * 8 and job["metrics"]["reward_distinct_errors"] == 5


def test_too_many_failures_fail_the_job_naming_the_reward(home, tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN)
    job, events = rl_job("rlvr", write_jsonl(tmp_path / "rows.jsonl", TRAIN[:8]), expect="failed",
                         training_type="full-rank", reward_function=f"{tmp_path / 'broken.py'}:always",
                         skip_reward_validation=True, hyperparameters={"max_steps": 5, "max_response_length": 4})
    assert "broken.py:always failed on 32 of 32 samples in step 1" in job["error"]
    assert "RuntimeError: the grader is broken" in job["error"] and "20% threshold" in job["error"]
    assert job["output_path"] is None and job["step"] == 0
    assert sum(1 for e in events if e["message"].startswith("reward ")) == 1
