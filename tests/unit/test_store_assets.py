"""The one versioned-asset store (store/assets.py) under datasets and evaluators: versions are
numbered per name, keyed by content, found as `name` or `name@vN`, and removed with their name."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path):
    from tuneloop.store import open_store

    return open_store(f"sqlite:///{tmp_path / 'assets.db'}")


def _dataset(sha: str, rows: int = 1) -> dict:
    return dict(technique="sft", format="prompt-completion", sha256=sha, rows=rows, columns=["prompt"],
                source="x.jsonl", path="/tmp/x.jsonl")


def test_versions_are_numbered_per_name_and_keyed_by_content(store):
    a1, added = store.datasets.add("a", _dataset("1" * 64), head={"description": "first"})
    assert added and a1["ref"] == "a@v1"
    again, added = store.datasets.add("a", _dataset("1" * 64))
    assert not added and again["id"] == a1["id"]                 # same content: the existing version
    a2, added = store.datasets.add("a", _dataset("2" * 64, rows=2))
    assert added and a2["ref"] == "a@v2"
    b1, _ = store.datasets.add("b", _dataset("1" * 64))         # the same content under another name
    assert b1["ref"] == "b@v1"
    assert store.datasets.get("a")["ref"] == "a@v2" and store.datasets.get("a@v1")["rows"] == 1
    assert store.datasets.get("a@v3") is None and store.datasets.get("a@vx") is None
    assert store.datasets.get("missing") is None
    assert store.datasets.head("a")["description"] == "first"
    assert [r["ref"] for r in store.datasets.list()] == ["a@v1", "a@v2", "b@v1"]
    assert [(r["ref"], r["versions"]) for r in store.datasets.latest()] == [("a@v2", 2), ("b@v1", 1)]
    assert store.get_dataset_version("a@v1") == store.datasets.get("a@v1")   # the lookup passed down


def test_update_and_delete(store):
    row, _ = store.datasets.add("a", _dataset("1" * 64))
    store.datasets.add("a", _dataset("2" * 64))
    store.datasets.update(row["id"], path="/elsewhere/data.jsonl")
    assert store.datasets.get("a@v1")["path"] == "/elsewhere/data.jsonl"
    assert [r["ref"] for r in store.datasets.delete("a", 1)] == ["a@v1"]
    assert store.datasets.head("a") is not None
    assert [r["ref"] for r in store.datasets.delete("a")] == ["a@v2"]
    assert store.datasets.head("a") is None and store.datasets.list("a") == []


def test_evaluators_are_the_same_store_with_their_own_payload(store):
    row = dict(type="reward-function", kind="builtin", source="builtin:exact_match", target="builtin:exact_match",
               sha256="3" * 64)
    v1, added = store.evaluators.add("em", row, head={"type": "reward-function", "description": None})
    assert added and v1["ref"] == "em@v1" and v1["kind"] == "builtin"
    assert store.evaluators.head("em")["type"] == "reward-function"
    assert store.get_evaluator_version("em") == store.evaluators.get("em@v1")
    assert store.datasets.get("em") is None                        # kinds do not mix
