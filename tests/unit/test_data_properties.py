"""Properties of the pure transforms (hypothesis): flatten and the column map."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tuneloop.data.formats import PREFERENCE, PROMPT_COMPLETION, make_converter
from tuneloop.data.schema import SCHEMAS
from tuneloop.data.transforms import detect_chat_shape, flatten, flatten_shape, parse_column_map, rename_columns
from tuneloop.data.validate import RecordProblem

roles = st.sampled_from(["system", "user", "assistant", "tool"])
texts = st.text(max_size=40)
message = st.fixed_dictionaries({"role": roles, "content": texts})
chat_value = st.one_of(message, st.lists(message, max_size=6),
                       st.fixed_dictionaries({"content": texts}),
                       st.lists(st.fixed_dictionaries({"role": roles, "content": st.lists(
                           st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=3)}), max_size=3))
cell = st.one_of(texts, chat_value)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@given(texts)
def test_plain_strings_pass_through_unchanged(s):
    assert flatten(s) == s
    assert flatten_shape(s) is None


@given(chat_value)
def test_flatten_of_chat_values_is_a_string_and_the_fast_path_agrees(value):
    out = flatten(value)
    assert isinstance(out, str)
    shape = flatten_shape(value)
    assert shape is not None and shape[2] == out and shape[:2] == detect_chat_shape(value)


@given(st.one_of(st.integers(), st.booleans(), st.none(), st.dictionaries(names, st.integers(), max_size=3),
                 st.lists(st.integers(), min_size=1, max_size=3)))
def test_non_chat_values_are_not_chat(value):
    assert flatten_shape(value) is None or isinstance(flatten_shape(value)[2], str)


@settings(max_examples=200)
@given(st.fixed_dictionaries({"prompt": cell, "chosen": cell, "rejected": cell}))
def test_staged_dpo_rows_match_the_schema_types(record):
    row = make_converter("dpo", PREFERENCE)(record)
    assert list(row) == list(SCHEMAS["dpo"]) and all(isinstance(v, str) for v in row.values())
    for col in row:
        if isinstance(record[col], str):
            assert row[col] == record[col]


@settings(max_examples=200)
@given(st.fixed_dictionaries({"prompt": st.one_of(cell, st.integers(), st.none()),
                              "completion": st.one_of(cell, st.floats(), st.lists(st.integers(), max_size=2))}))
def test_sft_conversion_gives_strings_or_a_named_problem(record):
    try:
        row = make_converter("sft", PROMPT_COMPLETION)(record)
    except RecordProblem as e:
        assert e.column in ("prompt", "completion") and e.message
    else:
        assert all(isinstance(v, str) for v in row.values())


@given(st.dictionaries(names, names, max_size=5).filter(lambda m: len(set(m.values())) == len(m)), st.booleans())
def test_column_map_both_syntaxes_parse_to_the_same_mapping(mapping, colon):
    text = ",".join(f"{s}:{d}" if colon else f"{d}={s}" for s, d in mapping.items())
    assert parse_column_map(text) == mapping


@given(st.dictionaries(names, texts, max_size=6),
       st.dictionaries(names, names, max_size=3).filter(lambda m: len(set(m.values())) == len(m)))
def test_rename_keeps_every_value_or_refuses_a_collision(record, mapping):
    targets = [mapping.get(k, k) for k in record]
    try:
        out = rename_columns(record, mapping)
    except ValueError:
        assert len(set(targets)) < len(targets)   # two columns would land on one name
    else:
        assert set(out) == set(targets) and len(out) == len(record)
        for k, v in record.items():
            assert out[mapping.get(k, k)] is v


@pytest.mark.parametrize("text", ["a:b:c", "x=y=z"])
def test_column_map_splits_on_the_first_separator(text):
    assert len(parse_column_map(text)) == 1
