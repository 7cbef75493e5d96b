import pytest
from hypothesis import given, strategies as st

from tuneloop.data.transforms import (EMPTY_LIST, MIXED_ROLES, SAME_ROLE, SINGLE_DICT, SINGLE_ELEMENT_LIST,
                                      describe_shape, detect_chat_shape, flatten, parse_column_map, rename_columns, DROP)
from tuneloop.errors import DatasetError


def test_column_map_both_syntaxes():
    assert parse_column_map("input:prompt,output:completion") == {"input": "prompt", "output": "completion"}
    assert parse_column_map("prompt=question, completion=answer") == {"question": "prompt", "answer": "completion"}
    assert parse_column_map(None) == {}


@pytest.mark.parametrize("bad", ["prompt", ":", "=", "a:x,b:x", "a:x,a:y"])
def test_column_map_errors_name_the_entry(bad):
    with pytest.raises(DatasetError) as e:
        parse_column_map(bad)
    assert e.value.param == "column_map"


@pytest.mark.parametrize("text", ["notes:", "notes=", "=notes", " notes : "])
def test_an_entry_with_one_empty_side_drops_the_column(text):
    assert parse_column_map(text) == {"notes": DROP}
    assert rename_columns({"prompt": "p", "notes": "n"}, parse_column_map(text)) == {"prompt": "p"}


def test_rename_keeps_other_columns():
    assert rename_columns({"q": 1, "x": 2}, {"q": "prompt"}) == {"prompt": 1, "x": 2}


@pytest.mark.parametrize("record", [{"prompt": 1, "question": 2}, {"question": 2, "prompt": 1}])
def test_renaming_onto_an_existing_column_is_refused_not_overwritten(record):
    with pytest.raises(ValueError, match="renames column 'question' to 'prompt', but the row already has"):
        rename_columns(record, {"question": "prompt"})
    # dropping the other one, or a swap, is explicit
    assert rename_columns(record, {"question": "prompt", "prompt": DROP}) == {"prompt": 2}
    assert rename_columns(record, {"question": "prompt", "prompt": "question"}) == {"prompt": 2, "question": 1}


def test_flatten_strategies():
    assert flatten({"role": "assistant", "content": "AI is"}) == "AI is"
    assert flatten([{"role": "user", "content": "hi"}]) == "hi"
    assert flatten([{"role": "assistant", "content": "A"}, {"role": "assistant", "content": "B"}]) == "A\nB"
    assert flatten([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]) == "user: Q\nassistant: A"
    assert flatten([]) == ""


def test_detect_and_describe():
    assert detect_chat_shape({"role": "a", "content": "x"}) == (SINGLE_DICT, 1)
    assert detect_chat_shape([{"role": "a", "content": "x"}]) == (SINGLE_ELEMENT_LIST, 1)
    assert detect_chat_shape([{"role": "a", "content": "x"}] * 4)[0] == SAME_ROLE
    assert detect_chat_shape([{"role": "u", "content": "x"}, {"role": "a", "content": "y"}])[0] == MIXED_ROLES
    assert detect_chat_shape([]) == (EMPTY_LIST, 0)
    assert detect_chat_shape("text") is None
    assert describe_shape(SAME_ROLE, 4) == "newline-joined content (4 messages, same role)"
    assert describe_shape(MIXED_ROLES, 3) == "role: content (multi-turn, 3 messages)"


def test_unconvertible_value_is_a_clear_error():
    with pytest.raises(ValueError, match="Cannot convert value to string"):
        flatten({"role": "a", "content": {"nested": True}})


@given(st.text())
def test_plain_strings_pass_through(s):
    assert flatten(s) == s


@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text()}),
                max_size=5))
def test_flatten_of_messages_is_always_a_string(messages):
    assert isinstance(flatten(messages), str)
