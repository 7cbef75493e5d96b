"""Rewards for RLVR and RLAIF: built-in graders, user reward functions (files, modules, HTTP
endpoints, OpenAI grader JSON, registered evaluators), LLM judges, and the sandbox that runs user
Python code apart from the trainer.

    from tuneloop.rewards.base import Sample
    from tuneloop.rewards.functions import RewardContext, resolve_reward
    with RewardContext() as ctx:
        fn = resolve_reward("builtin:exact_match", ctx)
        fn.score([Sample("0", [{"role": "user", "content": "2+2?"}], "4", {"answer": "4"})])  # [Score(1.0)]

Modules: base (samples, scores), graders (built-ins, OpenAI grader JSON), functions (references,
files, modules, HTTP endpoints), prompts and judge (RLAIF), sandbox and worker (user code apart
from the trainer), engine (a training step's rewards and failures), verify, assets (evaluators).
Nothing here imports torch: only a local judge model loads it, and only when it first scores.
This package's __init__ stays empty so sandbox workers start fast.
"""
