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


def _chat_prompts(tok, prompts: Sequence[str]) -> list[str]:
    if getattr(tok, "chat_template", None):
        return [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                for p in prompts]
    return list(prompts)


def generate(model, tok, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 16) -> list[str]:
    """Greedy answers to user prompts, asked through the chat template (left-padded batches)."""
    import torch

    texts = _chat_prompts(tok, prompts)
    out: list[str] = []
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
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
    import torch

    if getattr(tok, "chat_template", None):
        p = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": completion}], tokenize=False)
    else:
        p, full = prompt, prompt + completion
    p_ids = tok(p, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, -1)
    targets = x[0, 1:]
    picked = logp[torch.arange(len(targets)), targets]
    return float(picked[len(p_ids) - 1:].sum())


def preference_accuracy(model, tok, rows: Sequence[dict[str, Any]]) -> tuple[float, list[float]]:
    """Share of pairs where the model gives `chosen` a higher log-probability than `rejected`,
    and the per-pair margins log p(chosen) - log p(rejected)."""
    margins = [completion_logprob(model, tok, r["prompt"], r["chosen"])
               - completion_logprob(model, tok, r["prompt"], r["rejected"]) for r in rows]
    return (sum(m > 0 for m in margins) / len(margins) if margins else 0.0), margins
