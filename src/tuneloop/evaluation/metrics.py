"""Evaluation metrics on a model's log-probabilities and answers, batched.

    stats = answer_logprobs(model, tok, [(prompt, answer), ...])    # per row: (sum log p, tokens, correct)
    sft_metrics(stats)          # {"loss", "perplexity", "token_accuracy"}: token-weighted over the set
    pairwise_verdict("A")       # 1.0 (A better), 0.0 (B better), 0.5 (tie), None (no verdict)

A prompt is a string (one user turn) or a message list; the answer is the assistant turn after it,
rendered through the model's chat template when it has one. Only the tokens the training loss
covers count, tokenized by the same function (tuneloop.training.tokenize): the answer through its
end-of-turn token; `row_logprobs` scores staged rows, every assistant turn of a messages row.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from tuneloop.training.tokenize import Encoded, encode_row


def encode(tok, prompt: Any, answer: str) -> Encoded:
    """The tokens of prompt + answer and the mask of the answer's (the one SFT tokenization,
    tuneloop.training.tokenize: the assistant turn through its end-of-turn token, or the plain
    completion and eos without a chat template)."""
    return encode_row(tok, {"prompt": prompt, "completion": answer})


def answer_logprobs(model, tok, pairs: Sequence[tuple[Any, str]], batch_size: int = 8) -> list[tuple[float, int, int]]:
    """Per (prompt, answer): sum of log p(answer tokens), their count, and how many the model's
    argmax predicts."""
    return masked_logprobs(model, tok, [encode(tok, p, a) for p, a in pairs], batch_size)


def row_logprobs(model, tok, rows: Sequence[dict[str, Any]], batch_size: int = 8) -> list[tuple[float, int, int]]:
    """The same per staged SFT row (prompt/completion, or messages: every assistant turn), the
    tokens its training loss covers."""
    return masked_logprobs(model, tok, [encode_row(tok, r, where=f"row {i}") for i, r in enumerate(rows, 1)],
                           batch_size)


def masked_logprobs(model, tok, encoded: Sequence[Encoded], batch_size: int = 8) -> list[tuple[float, int, int]]:
    """Per encoded row: sum of log p over its masked tokens, their count, argmax hits.
    Right-padded batches; padding is masked by position (attention mask, row length), never by
    token id, so a pad token equal to eos leaves the real eos scored."""
    import torch

    out: list[tuple[float, int, int]] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, e in enumerate(chunk):
            ids[j, :len(e.input_ids)] = torch.tensor(e.input_ids)
            attn[j, :len(e.input_ids)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, :-1].float().cpu()
        logp = torch.log_softmax(logits, -1)
        targets = ids[:, 1:]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        hits = logits.argmax(-1) == targets
        for j, e in enumerate(chunk):
            # position k - 1 predicts token k; a trained first token has nothing before it to predict it
            span = torch.zeros(width - 1, dtype=torch.bool)
            span[:len(e.mask) - 1] = torch.tensor(e.mask[1:], dtype=torch.bool)
            out.append((float(picked[j][span].sum()), int(span.sum()), int(hits[j][span].sum())))
    return out


def sft_metrics(stats: Sequence[tuple[float, int, int]]) -> dict[str, float]:
    tokens = sum(n for _, n, _ in stats)
    if tokens == 0:
        return {}
    loss = -sum(s for s, _, _ in stats) / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": sum(c for _, _, c in stats) / tokens, "tokens": float(tokens)}


def preference_metrics(policy: Sequence[tuple[float, float]], reference: Sequence[tuple[float, float]] | None,
                       beta: float) -> dict[str, float]:
    """policy/reference: (log p chosen, log p rejected) per pair. With a reference, DPO's implicit
    reward margin beta * ((pc - rc) - (pr - rr)); without one, the log-probability margin pc - pr."""
    if reference is not None:
        margins = [beta * ((pc - rc) - (pr - rr)) for (pc, pr), (rc, rr) in zip(policy, reference)]
    else:
        margins = [pc - pr for pc, pr in policy]
    if not margins:
        return {}
    return {"preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "reward_margin": sum(margins) / len(margins), "pairs": float(len(margins))}


PAIRWISE_PROMPT = (
    "You are comparing two assistant responses to the same request.\n\nRequest:\n{prompt}\n\n"
    "Response A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Which response is better: more correct, more helpful, and more to the point? "
    "Reply with exactly one of: A, B, tie.")
_VERDICT = re.compile(r"\b(?:response\s+)?(A|B|tie)\b", re.I)


def pairwise_verdict(answer: str) -> float | None:
    """The judge's verdict for response A: 1 (A), 0 (B), 0.5 (tie); None when it gives none or both."""
    found = {m.group(1).lower() for m in _VERDICT.finditer(answer or "")}
    if len(found) != 1:
        return None
    return {"a": 1.0, "b": 0.0, "tie": 0.5}[found.pop()]
