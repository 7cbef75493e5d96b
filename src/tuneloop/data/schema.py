"""Canonical record schemas per technique (what staged JSONL holds)."""

from __future__ import annotations

# column -> expected type ("string" | "array"), in the seed catalog's vocabulary
SCHEMAS: dict[str, dict[str, str]] = {
    "sft": {"prompt": "string", "completion": "string"},
    "dpo": {"prompt": "string", "chosen": "string", "rejected": "string"},
    "rlvr": {"prompt": "array", "reward_model": "string"},
    "rlaif": {"prompt": "array", "reward_model": "string"},
}

EXAMPLES: dict[str, str] = {
    "sft": '{"prompt": "What is the capital of France?", "completion": "Paris."}',
    "dpo": '{"prompt": "What causes rain?", "chosen": "Water vapour condenses into drops.", "rejected": "The sky cries."}',
    "rlvr": '{"prompt": [{"role": "user", "content": "Solve: 2 + 2"}], "reward_model": "builtin:exact_match", "answer": "4"}',
    "rlaif": '{"prompt": [{"role": "user", "content": "Explain gravity simply"}], "reward_model": "Builtin.Helpfulness"}',
}

# Other names people use for the canonical columns, closest first: used to suggest --column-map.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("input", "question", "instruction", "query", "text", "source", "context"),
    "completion": ("output", "answer", "response", "target", "label", "reply"),
    "chosen": ("preferred", "preferred_output", "good", "positive", "accepted"),
    "rejected": ("non_preferred", "non_preferred_output", "bad", "negative", "dispreferred"),
    "reward_model": ("reward", "reward_fn", "grader"),
}

# Where a row's reference answer lives, first match wins: graders compare against it
# (`builtin:exact_match`), reward prompts show it as {{ ground_truth }}, `evaluators verify` uses it
# as a test completion, and the planner bounds an RL job's completion length by it.
REFERENCE_COLUMNS: tuple[str, ...] = ("ground_truth", "answer", "reference", "reference_answer", "solution", "label",
                                      "target", "expected", "expected_output", "output", "completion")
