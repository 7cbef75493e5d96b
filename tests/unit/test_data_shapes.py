"""Real-world dataset shapes (Alpaca, ShareGPT) and the rule that no text column is dropped
silently: an unread text column fails staging with its file, line and the --column-map fix."""

from __future__ import annotations

import json

import pytest

from tuneloop.data import stage as stage_mod
from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def stage(tmp_path, rows, technique="sft", name="d.jsonl", **kwargs):
    return stage_dataset(str(write(tmp_path / name, rows)), technique, tmp_path / "out.jsonl", lookup=None, **kwargs)


def refused(tmp_path, rows, technique="sft", **kwargs) -> DatasetError:
    (tmp_path / "out.jsonl").unlink(missing_ok=True)
    with pytest.raises(DatasetError) as e:
        stage(tmp_path, rows, technique, **kwargs)
    assert not (tmp_path / "out.jsonl").exists()
    return e.value


def staged(res):
    return [json.loads(x) for x in res.path.read_text().splitlines()]


ALPACA = [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
          {"instruction": "Name a primary colour.", "input": "", "output": "Blue"}]


def test_alpaca_keeps_the_instruction_and_says_how_it_joined_the_input(tmp_path):
    res = stage(tmp_path, ALPACA)
    assert staged(res) == [{"prompt": "Translate to French.\n\nGood morning", "completion": "Bonjour"},
                           {"prompt": "Name a primary colour.", "completion": "Blue"}]
    assert res.format == "alpaca" and res.warnings == []     # no empty-string warning: nothing was dropped
    assert "prompt = instruction, then a blank line and the input" in res.notes[0]


def test_alpaca_with_a_system_column_stages_conversations_that_keep_it(tmp_path):
    res = stage(tmp_path, [{"system": "Answer in French.", **ALPACA[0]}])
    assert res.format == "alpaca_system" and res.columns == ["messages"]
    assert staged(res)[0]["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_alpaca_system_only_on_later_rows_is_refused_with_how_to_keep_it(tmp_path):
    e = refused(tmp_path, [ALPACA[0], {"system": "Answer in French, please.", **ALPACA[1]}])
    text = e.render()
    assert "column 'system' holds text that the Alpaca (instruction/input/output) format does not read" in text
    assert "d.jsonl:2: column 'system'" in text and 'give the first row a "system" key' in text


def test_alpaca_style_preference_rows_stage_for_dpo(tmp_path):
    res = stage(tmp_path, [{"instruction": "Greet", "input": "a new customer", "chosen": "Welcome!",
                            "rejected": "What do you want?"}], "dpo")
    assert staged(res) == [{"prompt": "Greet\n\na new customer", "chosen": "Welcome!", "rejected": "What do you want?"}]


def test_sharegpt_stages_conversations_with_roles(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
             "system": "Be kind."}]
    res = stage(tmp_path, rows)
    assert res.format == "sharegpt" and res.columns == ["messages"]
    assert staged(res) == [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello!"}]}]


def test_an_unknown_sharegpt_speaker_is_refused_with_its_line_and_the_fix(tmp_path):
    ok = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
    bad = {"conversations": [{"from": "human", "value": "Weather?"},
                             {"from": "function_call", "value": "{\"name\": \"weather\"}"},
                             {"from": "gpt", "value": "Sunny."}]}
    text = refused(tmp_path, [ok, ok, bad]).render()
    assert "d.jsonl:3: column 'conversations' turn 2: unknown speaker 'from': 'function_call'" in text
    assert "Relabel that turn or remove it" in text and '{"conversations": [{"from": "human"' in text


def test_sharegpt_without_an_assistant_turn_is_refused(tmp_path):
    text = refused(tmp_path, [{"conversations": [{"from": "human", "value": "Hi"}]}]).render()
    assert "d.jsonl:1: column 'conversations' has no gpt/assistant turn" in text


CONTEXT = "The Eiffel Tower was completed in 1889 for the World's Fair."
SQUAD = [{"prompt": "When was the Eiffel Tower completed?", "completion": "1889", "context": CONTEXT},
         {"prompt": "For which event?", "completion": "The World's Fair", "context": CONTEXT}]


def test_an_unread_text_column_is_refused_naming_file_line_column_and_fix(tmp_path):
    e = refused(tmp_path, SQUAD)
    text = e.render()
    assert "column 'context' holds text that the prompt/completion format does not read" in text
    assert "d.jsonl:1: column 'context' holds text (2 of 2 non-empty row(s))" in text
    assert f"tuneloop tune --technique sft --dataset {tmp_path / 'd.jsonl'} --column-map \"context:\"" in text
    assert "--column-map 'context:TARGET'" in text and e.param == "column_map"


@pytest.mark.parametrize("column_map", ["context:", "context=", "=context"])
def test_dropping_it_explicitly_stages(tmp_path, column_map):
    assert staged(stage(tmp_path, SQUAD, column_map=column_map))[0] == {"prompt": SQUAD[0]["prompt"],
                                                                        "completion": "1889"}


def test_mapping_it_onto_a_column_the_format_reads_stages_it(tmp_path):
    rows = [{"context": CONTEXT, "question": "When was it completed?", "completion": "1889"}]
    text = refused(tmp_path, rows, column_map="context:prompt").render()
    assert "column 'question' holds text" in text
    assert '--column-map "context:prompt,question:"' in text      # the suggested command keeps the given map
    res = stage(tmp_path, rows, column_map="context:prompt,question:")
    assert staged(res) == [{"prompt": CONTEXT, "completion": "1889"}]


def test_the_first_line_with_text_is_named(tmp_path):
    rows = [{"prompt": f"Q{i}", "completion": "A", "notes": ""} for i in range(4)]
    rows[2]["notes"] = "checked by two annotators, see thread"
    assert "d.jsonl:3: column 'notes'" in refused(tmp_path, rows).render()


def test_metadata_labels_numbers_and_reference_answers_are_not_text_columns(tmp_path):
    rows = [{"prompt": "What is 2+2?", "completion": "4", "id": "3f2a-99c1", "source": "grade school math v2 set",
             "category": "open_qa", "difficulty": 3, "verified": True, "tag2": "arithmetic",
             "answer": "four, as in two plus two", "score_chosen": 8.5,
             "metadata": {"title": "A worksheet of sums for grade one"}}]
    assert stage(tmp_path, rows).rows == 1


def test_a_column_that_is_mostly_labels_is_not_a_text_column(tmp_path):
    rows = [{"prompt": f"Q{i}", "completion": "A", "kind": "arith"} for i in range(9)]
    rows.append({"prompt": "Q9", "completion": "A", "kind": "word problem misc"})
    assert stage(tmp_path, rows).rows == 10
    rows += [{"prompt": "Q", "completion": "A", "kind": "one more long label"}] * 9
    assert "column 'kind'" in refused(tmp_path, rows).render()


def test_chat_turns_in_an_unread_column_are_text(tmp_path):
    rows = [{"prompt": "P", "chosen": "good", "rejected": "bad",
             "history": [["What is rain?", "Water falling from clouds."]]}]
    assert "column 'history' holds text that the prompt/chosen/rejected format" in refused(tmp_path, rows, "dpo").render()


def test_dpo_has_no_system_slot_so_a_system_column_is_refused(tmp_path):
    rows = [{"system": "You are a polite assistant.", "prompt": "P", "chosen": "good", "rejected": "bad"}]
    assert "column 'system'" in refused(tmp_path, rows, "dpo").render()
    assert stage(tmp_path, rows, "dpo", column_map="system:").rows == 1


def test_rl_rows_keep_every_column_for_the_reward(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "reward_model": "builtin:exact_match",
             "explanation": "two plus two makes four"}]
    assert staged(stage(tmp_path, rows, "rlvr"))[0]["explanation"] == "two plus two makes four"


def test_a_rename_onto_an_existing_column_is_refused_on_its_line(tmp_path):
    rows = [{"prompt": "P", "question": "Q?", "completion": "C"}]
    text = refused(tmp_path, rows, column_map="question:prompt").render()
    assert "d.jsonl:1: --column-map renames column 'question' to 'prompt', but the row already has a 'prompt'" in text
    assert staged(stage(tmp_path, rows, column_map="question:prompt,prompt:"))[0]["prompt"] == "Q?"


def test_parallel_staging_names_the_same_column_and_line(tmp_path, monkeypatch):
    rows = [{"prompt": f"q{i}", "completion": "a"} for i in range(3000)]
    rows[2400]["note"] = "this one was rewritten by hand"
    p = write(tmp_path / "big.jsonl", rows)
    monkeypatch.setattr(stage_mod, "PARALLEL_MIN_BYTES", 1)
    texts = []
    for workers in ("1", "3"):
        monkeypatch.setenv("TUNELOOP_STAGE_WORKERS", workers)
        with pytest.raises(DatasetError) as e:
            stage_dataset(str(p), "sft", tmp_path / "out.jsonl", lookup=None)
        texts.append(e.value.render())
    assert texts[0] == texts[1] and "big.jsonl:2401: column 'note' holds text (1 of 1" in texts[0]
