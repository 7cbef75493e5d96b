"""RL from the command line and the SDK: evaluators as versioned assets, `evaluators verify`, reward
verification before submission (a broken reward exits 1 and creates nothing), and one real RLVR
job through the CLI and its runner process, with reward metrics in `tuneloop logs`."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import cli, heavy_imports, write_jsonl

P = [{"role": "user", "content": "Please copy the word gold."}]
ROWS = [{"prompt": [{"role": "user", "content": f"Please copy the word {c}."}], "answer": c}
        for c in ("red", "blue", "green", "gold") * 4]
BROKEN = textwrap.dedent("""
    import time

    def good(completion, answer):
        return float(completion.strip() == answer)

    def raises(completion):
        raise ValueError("cannot grade " + completion)

    def hangs(completion):
        while True:
            time.sleep(0.01)

    def string(completion):
        return "excellent"

    def huge(completion):
        return float(len(bytearray(10 * 2**30)))
""")


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in-process calls resolve relative paths here; CLI calls get absolute ones
    (tmp_path / "rewards.py").write_text(BROKEN)
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    return tmp_path


def fn(files, name: str) -> str:
    return f"{files}/rewards.py:{name}"


def jobs() -> list:
    r = cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("fn, kind, message", [
    ("raises", "exception", "ValueError: cannot grade"), ("hangs", "timeout", "timed out after 1 s"),
    ("string", "type", "returned str 'excellent'"), ("huge", "memory", "MemoryError"),
])
def test_broken_rewards_fail_the_submission_before_any_job(home, files, fn, kind, message):
    from tuneloop.errors import ValidationError
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    svc = JobService(open_store(settings.database_url), settings)
    with pytest.raises(ValidationError) as err:
        svc.prepare(TuneRequest(technique="rlvr", dataset="rows.jsonl", reward_function=f"rewards.py:{fn}",
                                hyperparameters={"reward_timeout": 1.0}))
    e = err.value
    assert e.exit_code == 1 and "Reward verification failed before submission: rewards.py:" + fn in e.message
    assert any(f"[{kind}]" in d and message in d for d in e.details), e.details
    assert "--skip-reward-validation" in e.hint and "tuneloop evaluators verify" in e.hint
    assert svc.store.find_jobs() == []


def test_cli_exits_1_on_a_broken_reward_and_skip_validation_lets_it_through(home, files):
    r = cli("tune", "--technique", "rlvr", "--dataset", str(files / "rows.jsonl"), "--reward-function",
            fn(files, "raises"))
    assert r.returncode == 1, r.stderr
    assert "❌ Reward verification failed before submission" in r.stderr and "ValueError: cannot grade" in r.stderr
    assert jobs() == []
    r = cli("tune", "--technique", "rlvr", "--dataset", str(files / "rows.jsonl"), "--reward-function",
            fn(files, "raises"), "--skip-reward-validation", "--dry-run", "--num-generations", "4",
            "--kl-coef", "0")
    assert r.returncode == 0, r.stderr
    assert "generations" in r.stdout and "4 per prompt" in r.stdout and "kl 0" in r.stdout and jobs() == []
    r = cli("tune", "--technique", "sft", "--dataset", str(files / "rows.jsonl"), "--temperature", "0.5")
    assert r.returncode == 1 and "only applies to rlvr and rlaif" in r.stderr


def test_evaluators_create_version_show_and_verify(home, files):
    r = cli("evaluators", "create", "colour", "--type", "reward-function", "--source", fn(files, "good"))
    assert r.returncode == 0 and "Created colour@v1" in r.stdout, r.stderr
    assert "Unchanged: colour@v1" in cli("evaluators", "create", "colour", "--source", fn(files, "good")).stdout
    (files / "rewards.py").write_text(BROKEN.replace("completion.strip() == answer", "answer in completion"))
    assert "Created colour@v2" in cli("evaluators", "create", "colour", "--source", fn(files, "good")).stdout
    (files / "rewards.py").write_text(BROKEN)  # v1 and v2 are frozen copies: editing the file changes neither
    r = cli("evaluators", "create", "judge", "--source", "Builtin.Correctness")
    assert "Created judge@v1 (reward-prompt" in r.stdout, r.stderr
    bad = cli("evaluators", "create", "judge", "--source", fn(files, "good"))
    assert bad.returncode == 1 and "a new version cannot be a reward-function" in bad.stderr
    listed = {e["name"]: e for e in json.loads(cli("evaluators", "list", "--json").stdout)}
    assert listed["colour"]["version"] == 2 and listed["judge"]["type"] == "reward-prompt"
    assert [v["ref"] for v in json.loads(cli("evaluators", "versions", "colour", "--json").stdout)] == \
        ["colour@v1", "colour@v2"]
    shown = json.loads(cli("evaluators", "show", "colour@v2", "--json").stdout)
    assert "answer in completion" in shown["content"] and shown["target"].endswith("/v2/rewards.py:good")

    ok = cli("evaluators", "verify", "colour@v1", "--dataset", str(files / "rows.jsonl"), "--samples", "3")
    assert ok.returncode == 0 and ok.stdout.count("score 1") == 3, ok.stdout + ok.stderr
    given = json.loads(cli("evaluators", "verify", "colour", "--dataset", str(files / "rows.jsonl"), "--samples", "2",
                           "--completion", "it is red", "--json").stdout)
    assert [r["score"] for r in given["rewards"][0]["results"]] == [1.0, 0.0]  # v2: answer in completion
    broken = cli("evaluators", "verify", fn(files, "string"), "--dataset", str(files / "rows.jsonl"))
    assert broken.returncode == 1 and "[type]" in broken.stdout and "returned str 'excellent'" in broken.stdout
    builtin = cli("evaluators", "verify", "builtin:exact_match", "--dataset", str(files / "rows.jsonl"), "--samples", "2")
    assert builtin.returncode == 0 and "score 1" in builtin.stdout
    judge = cli("evaluators", "verify", "judge", "--dataset", str(files / "rows.jsonl"))
    assert judge.returncode == 1 and "needs a judge" in judge.stderr


def test_sdk_evaluator_and_rl_trainers(home, files):
    from tuneloop import Evaluator, EvaluatorType, RLAIFTrainer, RLVRTrainer
    from tuneloop.errors import ValidationError

    ev = Evaluator.create(name="sdk-colour", type=EvaluatorType.RewardFunction, source="rewards.py:good")
    assert str(ev) == "sdk-colour@v1" and ev.arn == "tuneloop:evaluator/sdk-colour@v1"
    assert Evaluator.get("sdk-colour").sha256 == ev.sha256 and [e.ref for e in ev.get_versions()] == [ev.ref]
    assert ev.verify("rows.jsonl", samples=2).ok
    broken = Evaluator.create(name="sdk-broken", type="RewardFunction", source="rewards.py:raises")
    with pytest.raises(ValidationError, match="sdk-broken@v1"):
        RLVRTrainer(training_dataset="rows.jsonl", custom_reward_function=broken).train()
    prompt = Evaluator.create(name="sdk-prompt", type=EvaluatorType.RewardPrompt,
                              source="Rate {{ completion }} against {{ refrence }}")
    with pytest.raises(ValidationError, match="sdk-prompt@v1") as err:
        RLAIFTrainer(training_dataset="rows.jsonl", reward_model_id="openai:judge@http://127.0.0.1:9/v1",
                     reward_prompt=prompt).train()
    assert "'refrence' is undefined" in err.value.details[0]
    assert jobs() == []


@pytest.mark.slow
def test_rlvr_job_through_the_cli_with_a_registered_evaluator(home, files):
    assert cli("evaluators", "create", "colour", "--source", fn(files, "good")).returncode == 0
    r = cli("tune", "--technique", "rlvr", "--dataset", str(files / "rows.jsonl"), "--reward-function", "colour@v1",
            "--max-steps", "2", "--num-generations", "4", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    assert "Rewards verified on sample rows: colour@v1" in r.stderr and "completed" in r.stdout
    assert "tuneloop adapter add tuned-rlvr --from-tune rlvr" in r.stdout and "final_reward=" in r.stdout
    [job] = jobs()
    assert job["technique"] == "rlvr" and job["state"] == "completed" and job["step"] == 2
    log = cli("logs", job["id"]).stdout
    assert "step 2/2:" in log and "reward=" in log and "reward_std=" in log and "kl=" in log
    assert "completions/mean_length=" in log and "completions/clipped_ratio=" in log
    assert json.loads(cli("config", "--json").stdout)["TUNE_ADAPTER_PATH_RLVR"] == job["output_path"]


@pytest.mark.parametrize("argv", [["evaluators", "--help"], ["evaluators", "list"], ["evaluators", "versions", "x"]])
def test_evaluator_commands_do_not_import_torch(home, argv):
    assert heavy_imports(*argv) == []
