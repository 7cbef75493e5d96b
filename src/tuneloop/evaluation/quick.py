"""Fast in-process evaluation used by the demo, the tests and job summaries.

    model, tok = load_for_eval(base_dir, adapter_dir)
    answers = generate(model, tok, ["What is the capital of France?"])
    exact_match(answers, ["Paris."])            # -> 1.0
"""

from __future__ import annotations

from typing import Any, Sequence


def load_for_eval(model_dir: str, adapter_dir: str | None = None):
    """Base model (+ PEFT adapter) and tokenizer, in eval mode, fp32 on CPU / bf16-capable GPU."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    tok = AutoTokenizer.from_pretrained(adapter_dir or model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval(), tok


def _chat_prompts(tok, prompts: Sequence[Any]) -> list[str]:
    """Each prompt (a user message's text, or a message list) rendered for generation."""
    if getattr(tok, "chat_template", None):
        return [tok.apply_chat_template([{"role": "user", "content": p}] if isinstance(p, str) else list(p),
                                        tokenize=False, add_generation_prompt=True) for p in prompts]
    return [p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts]


def generate(model, tok, prompts: Sequence[Any], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers to prompts (text or message lists), asked through the chat template
    (left-padded batches)."""
    import torch

    texts = _chat_prompts(tok, prompts)
    plain = not getattr(tok, "chat_template", None)   # a base model's prompt gets its bos, as in training and serving
    out: list[str] = []
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=plain)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            out += [tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in ids]
    finally:
        tok.padding_side = side
    return out


def exact_match(answers: Sequence[str], references: Sequence[str]) -> float:
    """Share of answers equal to their reference after stripping surrounding whitespace."""
    if not references:
        return 0.0
    return sum(a.strip() == r.strip() for a, r in zip(answers, references)) / len(references)


def completion_logprob(model, tok, prompt: str, completion: str) -> float:
    """Sum of log-probabilities of the assistant turn `completion` after the user turn `prompt`."""
    from tuneloop.evaluation.metrics import answer_logprobs

    return answer_logprobs(model, tok, [(prompt, completion)])[0][0]


def preference_accuracy(model, tok, rows: Sequence[dict[str, Any]]) -> tuple[float, list[float]]:
    """Share of pairs where the model gives `chosen` a higher log-probability than `rejected`,
    and the per-pair margins log p(chosen) - log p(rejected)."""
    margins = [completion_logprob(model, tok, r["prompt"], r["chosen"])
               - completion_logprob(model, tok, r["prompt"], r["rejected"]) for r in rows]
    return (sum(m > 0 for m in margins) / len(margins) if margins else 0.0), margins
