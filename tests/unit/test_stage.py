import json

import pytest

from tests.conftest import DEMO_DATA, write_jsonl
from tuneloop.data.stage import stage_dataset
from tuneloop.errors import DatasetError


def staged_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_stage_writes_canonical_rows(tmp_path):
    out = tmp_path / "out.jsonl"
    res = stage_dataset(str(DEMO_DATA / "sft.jsonl"), "sft", out)
    assert res.rows == 16 and len(res.sha256) == 64
    assert staged_rows(out)[0] == {"prompt": "What is the capital of France?", "completion": "Paris."}


def test_input_output_and_column_map_give_identical_output(tmp_path):
    a = stage_dataset(str(write_jsonl(tmp_path / "a.jsonl", [{"input": "Q", "output": "A"}])), "sft", tmp_path / "a.out")
    b = stage_dataset(str(write_jsonl(tmp_path / "b.jsonl", [{"question": "Q", "answer": "A"}])), "sft",
                      tmp_path / "b.out", column_map="prompt=question,completion=answer")
    c = stage_dataset(str(write_jsonl(tmp_path / "c.jsonl", [{"prompt": "Q", "completion": "A"}])), "sft", tmp_path / "c.out")
    assert a.sha256 == b.sha256 == c.sha256


def test_bom_crlf_and_blank_lines_are_handled(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}\r\n\r\n{"prompt": "c", "completion": "d"}\r\n')
    assert stage_dataset(str(p), "sft", tmp_path / "o.jsonl").rows == 2


def test_malformed_json_names_file_line_and_column(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, '{"prompt": "a", "completion": }'])
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(p), "sft", tmp_path / "o.jsonl")
    text = e.value.render()
    assert f"{p}:2: column 31: invalid JSON" in text
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob("o.jsonl*"))


def test_wrong_keys_show_required_detected_missing_and_a_column_map(tmp_path):
    p = write_jsonl(tmp_path / "k.jsonl", [{"question": "a", "response": "b"}])
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(p), "sft", tmp_path / "o.jsonl")
    text = e.value.render()
    assert "Required: prompt, completion" in text and "Detected: question, response" in text
    assert "Missing:  prompt, completion" in text
    assert '--column-map "question:prompt,response:completion"' in text


def test_type_errors_and_many_problems_are_counted(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}] + [{"prompt": i, "completion": "x"} for i in range(30)]
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(write_jsonl(tmp_path / "t.jsonl", rows)), "sft", tmp_path / "o.jsonl")
    assert "30 invalid line(s)" in e.value.message
    assert "column 'prompt' must be a string, got number" in e.value.render()
    assert "... and 10 more" in e.value.render()


@pytest.mark.parametrize("content, expected", [
    (b"", "has no records"),
    (b"\n\n", "has no records"),
    (b'[1, 2]\n', "expected a JSON object, got list"),
    (b'{"prompt": NaN, "completion": "x"}\n', "NaN is not valid JSON"),
    (b'{"prompt": "\xff", "completion": "x"}\n', "invalid UTF-8 byte 0xff"),
])
def test_bad_files(tmp_path, content, expected):
    p = tmp_path / "f.jsonl"
    p.write_bytes(content)
    with pytest.raises(DatasetError, match=None) as e:
        stage_dataset(str(p), "sft", tmp_path / "o.jsonl")
    assert expected in e.value.render()


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="Dataset file not found"):
        stage_dataset(str(tmp_path / "nope.jsonl"), "sft", tmp_path / "o.jsonl")


def test_dpo_chat_format_is_flattened_and_reported_once(tmp_path):
    rows = [{"prompt": "p", "chosen": {"role": "assistant", "content": "good"},
             "rejected": {"role": "assistant", "content": "bad"}}] * 3
    res = stage_dataset(str(write_jsonl(tmp_path / "c.jsonl", rows)), "dpo", tmp_path / "o.jsonl")
    assert staged_rows(tmp_path / "o.jsonl")[0] == {"prompt": "p", "chosen": "good", "rejected": "bad"}
    assert len(res.notes) == 2 and "Auto-converted column 'chosen' from chat-format to string" in res.notes[0]
    assert "Format: extracted content field" in res.notes[0]
    assert "2 row(s) are exact duplicates" in res.warnings[0]


def test_no_transform_halts_with_the_command_without_the_flag(tmp_path):
    rows = [{"prompt": "p", "chosen": {"role": "assistant", "content": "g"}, "rejected": "b"}]
    with pytest.raises(DatasetError) as e:
        stage_dataset(str(write_jsonl(tmp_path / "c.jsonl", rows)), "dpo", tmp_path / "o.jsonl", no_transform=True)
    assert "Column 'chosen' contains chat-format data (detected: single_dict) but --no-transform is active." in e.value.message
    assert "--no-transform" not in e.value.hint.splitlines()[-1]


def test_take_limits_rows(tmp_path):
    assert stage_dataset(str(DEMO_DATA / "sft.jsonl"), "sft", tmp_path / "o.jsonl", take=5).rows == 5
