"""tuneloop eval: its numbers equal hand-computed values on fixed tiny cases (SFT loss, perplexity
and token accuracy one row at a time; DPO preference accuracy and implicit reward margin against
the base; mean reward of a file evaluator over the recorded answers), and the pairwise win rate
against the base equals the rule of a deterministic judge behind the OpenAI API."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest

from tests.conftest import DEMO_DATA, write_jsonl
from tests.stubs import JsonHandler, chat_completion, serve

pytestmark = pytest.mark.slow


def _rows(name):
    return [json.loads(line) for line in (DEMO_DATA / name).read_text().splitlines() if line.strip()]


SFT, DPO, HELD, WARM = _rows("sft.jsonl"), _rows("dpo.jsonl"), _rows("rlvr_heldout.jsonl"), _rows("rlvr_warmstart.jsonl")
COLOURS = ("red", "blue", "green", "gold")


def by_hand(model, tok, prompt, answer):
    """Sum of log p(answer tokens), count and argmax hits, one row alone (no batching, no padding)."""
    import torch

    p = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True,
                                return_dict=True)["input_ids"]
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                   tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0, :-1]
    logp = torch.log_softmax(logits, -1)
    idx = range(len(p) - 1, len(full) - 1)
    return (sum(logp[i, full[i + 1]].item() for i in idx), len(idx),
            sum(int(logits[i].argmax().item() == full[i + 1]) for i in idx))


@pytest.fixture
def adapter(train, tmp_path):
    """A LoRA adapter that answers the colour task (a short SFT)."""
    return train("sft", write_jsonl(tmp_path / "warm.jsonl", WARM), hyperparameters={"max_steps": 12})["output_path"]


def test_sft_metrics_equal_hand_computed_values(home, tmp_path, models_dir, adapter):
    from tuneloop.evaluation.quick import load_for_eval
    from tuneloop.evaluation.run import EvalRequest
    from tuneloop.service.app import open_services
    from tuneloop.models.builtin import ensure_builtin

    rows = [{"prompt": r["prompt"][0]["content"], "completion": r["answer"]} for r in HELD[:5]] + SFT[:3]
    result = open_services().evaluations.evaluate(EvalRequest(
        model=adapter, dataset=str(write_jsonl(tmp_path / "v.jsonl", rows)), compare_base=True,
        output=str(tmp_path / "out")))
    assert result["technique"] == "sft" and result["rows"] == 8
    base_dir = str(ensure_builtin("tuneloop/tiny-qwen3", models_dir))
    for key, (model, tok) in (("model", load_for_eval(base_dir, adapter)), ("base", load_for_eval(base_dir))):
        stats = [by_hand(model, tok, r["prompt"], r["completion"]) for r in rows]
        tokens = sum(n for _, n, _ in stats)
        loss = -sum(s for s, _, _ in stats) / tokens
        got = result[key]
        print(f"{key}: loss {got['loss']:.5f} (hand {loss:.5f}), token accuracy {got['token_accuracy']:.4f}, "
              f"exact match {got['exact_match']:.3f}")
        assert got["loss"] == pytest.approx(loss, rel=1e-4) and got["tokens"] == tokens
        assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
        assert got["token_accuracy"] == pytest.approx(sum(c for _, _, c in stats) / tokens)
    answers = [s["model"] for s in result["samples"]]
    assert result["model"]["exact_match"] == sum(a == r["completion"] for a, r in zip(answers, rows)) / 8
    assert result["model"]["exact_match"] > result["base"]["exact_match"]
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text())["model"]["loss"] == result["model"]["loss"]
    assert "| loss |" in (out / "report.md").read_text() and (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_dpo_metrics_equal_hand_computed_values(home, tmp_path, models_dir, adapter):
    from tuneloop.evaluation.quick import load_for_eval
    from tuneloop.evaluation.run import EvalRequest
    from tuneloop.models.builtin import ensure_builtin
    from tuneloop.service.app import open_services

    rows = DPO[:6]
    evals = open_services().evaluations  # GROUP@vN, the adapter's registered version, is the store's to answer
    result = evals.evaluate(EvalRequest(model="default-tune-models@v1",
                                        dataset=str(write_jsonl(tmp_path / "p.jsonl", rows)), beta=0.5))
    assert result["technique"] == "dpo" and result["adapter"] == str(Path(adapter).resolve())
    base_dir = str(ensure_builtin("tuneloop/tiny-qwen3", models_dir))
    policy, tok = load_for_eval(base_dir, adapter)
    ref, _ = load_for_eval(base_dir)
    margins = []
    for r in rows:
        pc, pr = (by_hand(policy, tok, r["prompt"], r[k])[0] for k in ("chosen", "rejected"))
        rc, rr = (by_hand(ref, tok, r["prompt"], r[k])[0] for k in ("chosen", "rejected"))
        margins.append(0.5 * ((pc - rc) - (pr - rr)))
    m = result["model"]
    print(f"DPO: preference accuracy {m['preference_accuracy']:.3f}, margin {m['reward_margin']:.4f} "
          f"(hand {sum(margins) / 6:.4f})")
    assert m["preference_accuracy"] == pytest.approx(sum(x > 0 for x in margins) / 6)
    assert m["reward_margin"] == pytest.approx(sum(margins) / 6, rel=1e-4, abs=1e-5)


def test_mean_reward_of_an_evaluator_over_the_recorded_answers(home, tmp_path, adapter):
    from tuneloop.evaluation.run import EvalRequest
    from tuneloop.service.app import open_services

    (tmp_path / "score.py").write_text("def score(completion, answer):\n    return len(completion) / (1 + len(answer))\n")
    rows = HELD[:12]
    result = open_services().evaluations.evaluate(EvalRequest(
        model=adapter, dataset=str(write_jsonl(tmp_path / "r.jsonl", rows)),
        evaluators=[f"{tmp_path}/score.py:score", "builtin:exact_match"], max_new_tokens=6))
    assert result["technique"] == "rlvr"
    answers = [s["model"] for s in result["samples"]]
    expected = sum(len(a) / (1 + len(r["answer"])) for a, r in zip(answers, rows)) / 12
    assert result["model"][f"reward/{tmp_path}/score.py:score"] == pytest.approx(expected)
    assert result["model"]["reward/builtin:exact_match"] == sum(a == r["answer"] for a, r in zip(answers, rows)) / 12


class ColourJudge(JsonHandler):
    """Pairwise: the response that is a colour word wins; both or neither: tie. Pointwise (a reward
    prompt such as Builtin.Correctness): 10 for a colour word, else 2."""

    def do_POST(self):
        body = self.read_json()
        text = body["messages"][-1]["content"]
        if "Response A:" in text:
            a = text.split("Response A:\n", 1)[1].split("\n\nResponse B:", 1)[0].strip()
            b = text.split("Response B:\n", 1)[1].split("\n\nWhich response", 1)[0].strip()
            verdict = "tie" if (a in COLOURS) == (b in COLOURS) else ("A" if a in COLOURS else "B")
            answer = f"Verdict: {verdict}"
        else:
            response = text.split("Response:\n", 1)[1].split("\n\n", 1)[0].strip()
            answer = f"Score: {10 if response in COLOURS else 2}/10"
        self.send_json(chat_completion(body["model"], answer))


def test_win_rate_against_the_base_with_a_deterministic_judge(home, tmp_path, adapter, monkeypatch):
    from tuneloop.evaluation.run import EvalRequest
    from tuneloop.service.app import open_services

    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    rows = HELD[:16]
    with serve(ColourJudge) as url:
        result = open_services().evaluations.evaluate(EvalRequest(
            model=adapter, dataset=str(write_jsonl(tmp_path / "r.jsonl", rows)), evaluators=["builtin:exact_match"],
            compare_base=True, max_new_tokens=6, judge=f"openai:colour-rule@{url}/v1"))
    pairs = [(s["model"], s["base"]) for s in result["samples"]]
    expected = sum(0.5 if (m in COLOURS) == (b in COLOURS) else float(m in COLOURS) for m, b in pairs) / 16
    print(f"win rate vs base {result['model']['win_rate_vs_base']:.3f} (rule applied by hand {expected:.3f})")
    assert result["model"]["win_rate_vs_base"] == pytest.approx(expected) and expected > 0.5
    assert result["model"]["pairwise_judged"] == 16 and result["model"]["pairwise_undecided"] == 0


def test_sdk_custom_scorer_and_llm_as_judge_evaluators(home, tmp_path, train, monkeypatch):
    from tuneloop import CustomScorerEvaluator, LLMAsJudgeEvaluator, SFTTrainer

    job = SFTTrainer(training_dataset=str(write_jsonl(tmp_path / "warm.jsonl", WARM)),
                     hyperparameters={"max_steps": 12}).train(wait=True)
    data = str(write_jsonl(tmp_path / "r.jsonl", HELD[:8]))
    scored = CustomScorerEvaluator(evaluator="builtin:exact_match", dataset=data, model=job,
                                   evaluate_base_model=True, max_new_tokens=6).evaluate().wait()
    answers = [s["model"] for s in scored.results["samples"]]
    assert scored.metrics["reward/builtin:exact_match"] == sum(a == r["answer"] for a, r in zip(answers, HELD)) / 8
    assert scored.base_metrics["reward/builtin:exact_match"] == 0.0
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    with serve(ColourJudge) as url:
        judged = LLMAsJudgeEvaluator(model=job, evaluator_model=f"openai:rule@{url}/v1", dataset=data,
                                     builtin_metrics=["Correctness"], evaluate_base_model=True,
                                     max_new_tokens=6).evaluate()
    answers = [s["model"] for s in judged.results["samples"]]
    expected = sum(1.0 if a in COLOURS else 0.2 for a in answers) / 8
    assert judged.metrics["reward/Builtin.Correctness"] == pytest.approx(expected)
    assert judged.metrics["win_rate_vs_base"] > 0.5
    out = Path(judged.output_path)
    assert out.parent == home / "projects" / "default" / "evals" and (out / "report.md").is_file()


def test_benchmark_evaluator_says_what_is_missing(home):
    import importlib.util

    from tuneloop import BenchMarkEvaluator
    from tuneloop.errors import ValidationError

    with pytest.raises(ValidationError) as err:
        BenchMarkEvaluator(benchmark="mmlu", model="tuneloop/tiny-qwen3").evaluate()
    if importlib.util.find_spec("lm_eval") is None:
        assert "needs EleutherAI's lm-eval" in err.value.message and "pip install lm-eval" in err.value.hint
    else:
        assert "HF_HUB_OFFLINE" in err.value.message


def test_a_cancel_request_stops_a_running_eval_job_at_its_next_phase(home, tmp_path):
    import time

    from tuneloop.evaluation.run import EvalRequest
    from tuneloop.service.app import open_services
    from tuneloop.service.runner import run_job

    services = open_services()
    svc = services.jobs
    rows = [{"prompt": f"Tell me about the number {i}.", "completion": "ok"} for i in range(64)]
    job = services.evaluations.submit(EvalRequest(model="tuneloop/tiny-qwen3", compare_base=False, max_new_tokens=64,
                                                  dataset=str(write_jsonl(tmp_path / "rows.jsonl", rows))),
                                      launch=False)

    def cancel_once_running():
        while svc.get(job["id"])["state"] != "running":
            time.sleep(0.05)
        svc.cancel(job["id"])

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    assert run_job(svc.store, job["id"]) == "cancelled"
    canceller.join()
    job = svc.get(job["id"])
    assert job["state"] == "cancelled" and job["output_path"] is None
    messages = [e["message"] for e in svc.store.list_events(job["id"])]
    assert "job cancelled" in messages and not any(m.startswith("evaluation completed") for m in messages)
