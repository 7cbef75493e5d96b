"""Every record format, from JSONL, parquet and CSV, stages to the same canonical rows."""

from __future__ import annotations

import csv
import json

import pytest

from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError

SYS = {"role": "system", "content": "Be brief."}


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


# (technique, source rows, canonical rows, stage kwargs)
CASES = {
    "sft-prompt-completion": ("sft", [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}],
                              [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}], {}),
    "sft-chat-completion": ("sft", [{"prompt": "Q1", "completion": a("A1")}, {"prompt": "Q2", "completion": a("A2")}],
                            [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}], {}),
    "sft-input-output": ("sft", [{"input": "Q1", "output": "A1", "id": 1}, {"input": "Q2", "output": "A2", "id": 2}],
                         [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}], {}),
    "sft-messages": ("sft", [{"messages": [SYS, u("Q1"), a("A1"), u("Q2"), a("A2")]},
                             {"messages": [u("Q3"), a("A3")]}],
                     [{"messages": [SYS, u("Q1"), a("A1"), u("Q2"), a("A2")]}, {"messages": [u("Q3"), a("A3")]}], {}),
    "dpo-strings": ("dpo", [{"prompt": "P", "chosen": "good", "rejected": "bad"}],
                    [{"prompt": "P", "chosen": "good", "rejected": "bad"}], {}),
    "dpo-chat": ("dpo", [{"prompt": [u("P")], "chosen": [u("P"), a("good")], "rejected": [u("P"), a("bad")]}],
                 [{"prompt": "P", "chosen": "user: P\nassistant: good", "rejected": "user: P\nassistant: bad"}], {}),
    "dpo-openai-preference": ("dpo", [{"input": {"messages": [u("P")]}, "preferred_output": [a("good")],
                                       "non_preferred_output": [a("bad")]}],
                              [{"prompt": "P", "chosen": "good", "rejected": "bad"}], {}),
    "sft-alpaca": ("sft", [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
                           {"instruction": "Name a colour.", "input": "", "output": "Blue"},
                           {"instruction": "Name a fruit.", "output": "Apple"}],
                   [{"prompt": "Translate to French.\n\nGood morning", "completion": "Bonjour"},
                    {"prompt": "Name a colour.", "completion": "Blue"},
                    {"prompt": "Name a fruit.", "completion": "Apple"}], {}),
    "sft-alpaca-system": ("sft", [{"system": "Be brief.", "instruction": "Translate.", "input": "Hi", "output": "Salut"},
                                  {"system": "", "instruction": "Name a colour.", "input": "", "output": "Blue"}],
                          [{"messages": [SYS, u("Translate.\n\nHi"), a("Salut")]},
                           {"messages": [u("Name a colour."), a("Blue")]}], {}),
    "sft-sharegpt": ("sft", [{"id": "c1", "conversations": [{"from": "system", "value": "Be brief."},
                                                            {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"},
                                                            {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]},
                             {"id": "c2", "conversations": [{"from": "user", "value": "Q3"},
                                                            {"from": "assistant", "value": "A3"}]}],
                     [{"messages": [SYS, u("Q1"), a("A1"), u("Q2"), a("A2")]}, {"messages": [u("Q3"), a("A3")]}], {}),
    "sft-sharegpt-messages-system-column": (
        "sft", [{"system": "Be brief.", "messages": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}]}],
        [{"messages": [SYS, u("Q1"), a("A1")]}], {}),
    "dpo-alpaca": ("dpo", [{"instruction": "Greet", "input": "a new customer", "chosen": "Welcome!", "rejected": "What?"},
                           {"instruction": "Say thanks.", "input": "", "chosen": "Thank you!", "rejected": "Fine."}],
                   [{"prompt": "Greet\n\na new customer", "chosen": "Welcome!", "rejected": "What?"},
                    {"prompt": "Say thanks.", "chosen": "Thank you!", "rejected": "Fine."}], {}),
    "rlvr-prompt-array": ("rlvr", [{"prompt": [SYS, u("2+2?")], "reward_model": "builtin:exact_match", "answer": "4"}],
                          [{"prompt": [SYS, u("2+2?")], "reward_model": "builtin:exact_match", "answer": "4"}], {}),
    "rlaif-openai-reinforcement": ("rlaif", [{"messages": [u("Explain gravity")], "reference": "mass attracts"}],
                                   [{"prompt": [u("Explain gravity")], "reward_model": "Builtin.Helpfulness",
                                     "reference": "mass attracts"}], {"reward_model": "Builtin.Helpfulness"}),
}


def write_as(kind: str, path, rows):
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            for r in rows:
                w.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()})
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_each_record_format_from_jsonl_parquet_and_csv_stages_identically(tmp_path, case):
    technique, rows, canonical, kwargs = CASES[case]
    results = []
    for kind in ("jsonl", "parquet", "csv"):
        src = write_as(kind, tmp_path / f"data.{kind}", rows)
        res = stage_dataset(str(src), technique, tmp_path / f"{kind}.out.jsonl", lookup=None, **kwargs)
        results.append(res)
        assert [json.loads(x) for x in res.path.read_text().splitlines()] == canonical, kind
    assert len({r.sha256 for r in results}) == 1
    assert len({tuple(r.notes) for r in results}) == 1


def test_format_notes_are_reported_once(tmp_path):
    technique, rows, _, _ = CASES["dpo-openai-preference"]
    res = stage_dataset(str(write_as("jsonl", tmp_path / "p.jsonl", rows * 5)), technique, tmp_path / "o.jsonl",
                        lookup=None)
    assert res.notes[0].startswith("ℹ️  Converted OpenAI preference format")
    assert sum("Auto-converted column 'chosen'" in n for n in res.notes) == 1
    assert res.format == "openai_preference" and res.duplicates == 4


def test_a_staged_sft_file_is_uniform(tmp_path):
    rows = [{"messages": [u("Q"), a("A")]}, {"prompt": "Q", "completion": "A"}]
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(write_as("jsonl", tmp_path / "m.jsonl", rows)), "sft", tmp_path / "o.jsonl", lookup=None)
    assert "row is in the prompt/completion format but the first row is OpenAI chat messages" in e.value.render()


@pytest.mark.parametrize("messages, expected", [
    ([u("Q")], "has no assistant message"),
    ([{"role": "user"}], "message 1 (user): content must be a string, got null"),
    ([{"content": "x"}], "message 1: 'role' must be a non-empty string"),
    ("hello", "must be a non-empty array"),
    ([], "got an empty array"),
])
def test_bad_messages_say_which_message_and_what_was_expected(tmp_path, messages, expected):
    rows = [{"messages": [u("Q"), a("A")]}, {"messages": messages}]
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(write_as("jsonl", tmp_path / "m.jsonl", rows)), "sft", tmp_path / "o.jsonl", lookup=None)
    assert f"m.jsonl:2: column 'messages'" in e.value.render() and expected in e.value.render()


@pytest.mark.parametrize("kind, value, expected", [
    ("messages", [], 'column \'c\' must be a non-empty array of {"role", "content"} messages, got an empty array'),
    ("messages", [u("Q"), 3], "column 'c' message 2: expected an object with role and content, got number"),
    ("messages", [{"content": "x"}, 3], "column 'c' message 1: 'role' must be a non-empty string"),  # in order
    ("sharegpt", "hi", 'column \'c\' must be a non-empty array of {"from", "value"} turns, got string'),
    ("sharegpt", [{"from": "human", "value": "Q"}, None], "column 'c' turn 2: expected an object with from and value"),
])
def test_messages_and_sharegpt_turns_each_name_their_own_shape(kind, value, expected):
    from tuneloop.data.formats import RecordProblem, check_messages, sharegpt_turns

    with pytest.raises(RecordProblem) as e:
        (check_messages if kind == "messages" else sharegpt_turns)(value, "c")
    assert str(e.value).startswith(expected)


def test_content_parts_are_joined(tmp_path):
    rows = [{"messages": [u([{"type": "text", "text": "Q"}, {"type": "text", "text": "!"}]), a("A")]}]
    res = stage_dataset(str(write_as("jsonl", tmp_path / "m.jsonl", rows)), "sft", tmp_path / "o.jsonl", lookup=None)
    assert json.loads(res.path.read_text())["messages"][0] == u("Q!")


def test_rl_rows_need_a_reward_model(tmp_path):
    rows = [{"messages": [u("Q")], "answer": "4"}]
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(write_as("jsonl", tmp_path / "r.jsonl", rows)), "rlvr", tmp_path / "o.jsonl", lookup=None)
    assert "Missing:  reward_model" in e.value.render() and "--reward-function" in e.value.render()


def test_rl_prompt_arrays_are_never_flattened(tmp_path):
    rows = [{"prompt": "plain text", "reward_model": "r"}]
    with pytest.raises(DatasetError, match="invalid line"):
        stage_dataset(str(write_as("jsonl", tmp_path / "r.jsonl", rows)), "rlvr", tmp_path / "o.jsonl", lookup=None)
