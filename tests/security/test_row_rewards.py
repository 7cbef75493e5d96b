"""Data never chooses code, URLs or credentials: a dataset row's `reward_model` may name only
builtin graders, Builtin prompts, registered evaluators and the rewards the job's flags allow;
such rows are refused before any job exists, with their line; `--dry-run` runs no reward."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli, write_jsonl
from tests.stubs import JsonHandler, chat_completion, serve
from tuneloop.rewards.policy import RowRewardPolicy, module_problem

P = [{"role": "user", "content": "Please copy the word red."}]


def good_rows(n: int = 4) -> list[dict]:
    return [{"prompt": P, "answer": "red"} for _ in range(n)]


def jobs() -> list:
    r = cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def recorder():
    """A listener on 127.0.0.1 that records every request it gets."""
    seen: list[dict] = []

    class Handler(JsonHandler):
        def do_POST(self):
            seen.append({"path": self.path, "headers": dict(self.headers)})
            self.send_json(chat_completion("gpt", "10"))

        do_GET = do_POST

    with serve(Handler) as url:
        yield url, seen


def test_policy_allows_builtins_prompts_evaluators_and_flags_only():
    policy = RowRewardPolicy.for_job(flags=["reward.py:score"], allowed=["https://grader.example/x"],
                                     evaluators={"math"})
    for ok in ("builtin:exact_match", "builtin:contains?ignore_case=1", "Builtin.Helpfulness", "math", "math@v2",
               "reward.py:score", "https://grader.example/x"):
        assert policy(ok) is None, ok
    for bad in ("os:system", "subprocess:run", "/tmp/evil.py:fn", "http://169.254.169.254/latest", "unknown-eval",
                '{"type": "python", "source": "import os"}', "grader.json", "Rate {{ completion }} out of 10",
                "https://grader.example/y"):
        assert policy(bad), bad
    assert "--allow-row-rewards" in policy("os:system")


def test_module_rewards_may_not_name_the_standard_library_or_tuneloop():
    for bad in ("os", "os.path", "subprocess", "socket", "shutil", "pty", "ctypes", "importlib", "builtins",
                "tuneloop.rewards.worker", "mypkg._private"):
        assert module_problem(bad), bad
    assert module_problem("my_rewards.math") is None


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_row_naming_os_system_is_refused_with_its_line_and_runs_nothing(home, tmp_path, dry_run):
    marker = tmp_path / "pwned"
    rows = good_rows(3) + [{"prompt": P, "answer": "red", "reward_model": "os:system",
                            "command": f"touch {marker}"}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    r = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"),
            "--reward-function", "builtin:exact_match", *(["--dry-run"] if dry_run else []), "--no-wait")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rows.jsonl:4:" in r.stderr and "os:system" in r.stderr and "--allow-row-rewards" in r.stderr, r.stderr
    assert not marker.exists()
    assert jobs() == []


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_a_command_line_module_reward_naming_os_is_refused(home, tmp_path):
    marker = tmp_path / "pwned"
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": P, "command": f"touch {marker}"}] * 2)
    r = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"),
            "--reward-function", "os:system", "--dry-run")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "standard-library module" in r.stderr, r.stderr
    assert not marker.exists()


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_rows_naming_a_url_or_a_judge_with_credentials_send_nothing(home, tmp_path, recorder):
    url, seen = recorder
    grader = {"type": "score_model", "name": "judge", "model": f"openai:gpt@{url}/v1",
              "input": [{"role": "user", "content": "Score {{sample.output_text}}"}]}
    for i, ref in enumerate([f"{url}/reward", json.dumps(grader), f"Rate {{{{ completion }}}} at {url}"]):
        write_jsonl(tmp_path / f"rows{i}.jsonl", good_rows(2) + [{"prompt": P, "answer": "red", "reward_model": ref}])
        r = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / f"rows{i}.jsonl"),
                "--reward-function", "builtin:exact_match", "--no-wait",
                env={"OPENAI_API_KEY": "sk-secret", "TUNELOOP_REWARD_HTTP_TOKEN": "tok-secret"})
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"rows{i}.jsonl:3:" in r.stderr and "reward_model" in r.stderr, r.stderr
    assert seen == []
    assert jobs() == []


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_allowed_row_rewards_run_and_every_override_is_reported(home, tmp_path):
    (tmp_path / "mine.py").write_text("def score(completion, answer):\n    return float(answer in completion)\n")
    ref = f"{tmp_path}/mine.py:score"
    rows = good_rows(4) + [{"prompt": P, "answer": "red", "reward_model": "builtin:contains"}] * 2 + \
        [{"prompt": P, "answer": "red", "reward_model": ref}] * 3
    write_jsonl(tmp_path / "rows.jsonl", rows)
    args = ("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"),
            "--reward-function", "builtin:exact_match", "--dry-run")
    refused = cli(*args)
    assert refused.returncode == 1 and "rows.jsonl:7:" in refused.stderr, refused.stderr
    r = cli(*args, "--allow-row-rewards", ref)
    assert r.returncode == 0, r.stderr
    assert "2 rows use builtin:contains instead of --reward-function builtin:exact_match" in r.stderr
    assert f"3 rows use {ref}" in r.stderr
    assert f"Rows may also name: {ref}" in r.stderr
    assert "not run (dry run)" in r.stderr


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_dry_run_never_runs_a_reward(home, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "loud.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                      "def score(completion):\n    return 1.0\n")
    write_jsonl(tmp_path / "rows.jsonl", good_rows(2))
    ref = f"{tmp_path}/loud.py:score"
    r = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"), "--reward-function", ref,
            "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Dry run: nothing was created" in r.stdout
    assert not marker.exists()
    missing = cli("tune", "--technique", "rlvr", "--dataset", str(tmp_path / "rows.jsonl"),
                  "--reward-function", f"{tmp_path}/absent.py:score", "--dry-run")
    assert missing.returncode == 1 and "not found" in missing.stderr, missing.stderr


@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_eval_scores_rows_only_with_rewards_they_may_name(home, tmp_path, models_dir):
    marker = tmp_path / "pwned"
    write_jsonl(tmp_path / "rows.jsonl", [{"prompt": P, "answer": "red", "reward_model": "os:system",
                                           "command": f"touch {marker}"}])
    r = cli("eval", "--model", "tuneloop/tiny-qwen3", "--dataset", str(tmp_path / "rows.jsonl"),
            "--technique", "rlvr", "--output", str(tmp_path / "out"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rows.jsonl:1:" in r.stderr and "os:system" in r.stderr, r.stderr
    assert not marker.exists()



@pytest.mark.slow   # a tuneloop CLI process per case; run in CI (make test)
def test_evaluators_cannot_register_a_standard_library_module_or_a_metadata_url(home):
    for source, message in (("os:system", "standard-library module"),
                            ("http://169.254.169.254/latest", "link-local")):
        r = cli("evaluators", "create", "evil", "--type", "reward-function", "--source", source)
        assert r.returncode == 1 and message in r.stderr, r.stdout + r.stderr
    r = cli("evaluators", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout
