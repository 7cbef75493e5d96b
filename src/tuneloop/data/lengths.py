"""Lengths of staged rows: characters per column, and tokens with a model's tokenizer.

Token lengths use the `tokenizers` library on the model folder's tokenizer.json (no torch, no
transformers) and, when tokenizer_config.json has a chat template, render each row through it
with jinja2 the way training does (prompt + completion as a user and an assistant turn, chat
messages as they are, DPO's longer candidate), so "longer than --max-seq-length" means what the
trainer will see (`tuneloop datasets stage`, `datasets show`).

The planner's `token_stats` is a faster estimate for sizing a job (batch layout, max length, RL
completion length): texts joined without the template plus a fixed overhead for its markers. The
two are kept apart on purpose: changing the planner's numbers would change every plan. One
exception: an RL job's longest prompt (`DataStats.prompt_tokens`) is measured exactly, rendered
through the chat template with the generation prompt as the GRPO recipe renders it, because the
plan's max_prompt_length cuts prompts (a template's default system prompt alone is ~30 tokens for
SmolLM2). Training and evaluation measure with the loaded transformers tokenizer (cutting RL
prompts to max_prompt_length, sizing greedy answers), where the exact ids are what matter.

    stats = token_lengths(Path("staged.jsonl"), "sft", Path("~/.tuneloop/models/tuneloop--tiny-qwen3"), 512)
    stats["over_max"], stats["p90"]
    token_stats(Path("staged.jsonl"), "sft", folder).max_tokens
"""

from __future__ import annotations

import json
import re
from array import array
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.data.schema import REFERENCE_COLUMNS
from tuneloop.data.staged import iter_rows
from tuneloop.training.plan import DataStats

BATCH = 1024


def _conversations(row: dict[str, Any], technique: str) -> list[tuple[list[dict[str, str]], bool]]:
    """(messages, add_generation_prompt) renderings whose longest is the row's training length."""
    if "messages" in row:
        return [(row["messages"], False)]
    if technique in RL_TECHNIQUES:
        return [(row["prompt"], True)]
    user = {"role": "user", "content": row["prompt"]}
    if technique == "dpo":
        return [([user, {"role": "assistant", "content": row[k]}], False) for k in ("chosen", "rejected")]
    return [([user, {"role": "assistant", "content": row["completion"]}], False)]


def _special(value: Any) -> str:
    """A tokenizer_config.json special token: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _template(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """The folder's chat template text (None: it has none) and its tokenizer_config.json."""
    config = folder / "tokenizer_config.json"
    template, settings = None, {}
    if config.is_file():
        try:
            settings = json.loads(config.read_text())
            template = settings.get("chat_template")
        except (OSError, ValueError):
            template, settings = None, {}
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return (template if isinstance(template, str) else None), settings


def _renderer(folder: Path) -> Callable[[list[dict[str, str]], bool], str] | None:
    """The folder's chat template as transformers renders it (its bos/eos strings, today's date),
    or None when there is none or it does not compile."""
    template, settings = _template(folder)
    if template is None:
        return None
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)  # transformers' assistant-mask tags

    def raise_exception(msg: str) -> None:
        raise ValueError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        compiled = env.from_string(source)
    except Exception:
        return None
    bos, eos = _special(settings.get("bos_token")), _special(settings.get("eos_token"))

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=bos, eos_token=eos)
    return render


def _plain(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return "\n".join(f"{m['role']}\n{m['content']}" for m in messages)


def token_lengths(path: Path, technique: str, model_folder: Path, max_length: int | None) -> dict[str, Any]:
    """Distribution of token lengths of a staged file and how many rows exceed `max_length`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    render = _renderer(model_folder)
    templated = render is not None
    lengths = array("I")
    batch: list[str] = []
    owners: list[int] = []
    row_i = 0

    def run() -> None:
        best: dict[int, int] = {}
        for owner, enc in zip(owners, tok.encode_batch(batch, add_special_tokens=False)):
            best[owner] = max(best.get(owner, 0), len(enc.ids))
        lengths.extend(best[k] for k in sorted(best))
        batch.clear()
        owners.clear()

    for row in iter_rows(path):
        for messages, gen in _conversations(row, technique):
            try:
                text = render(messages, gen) if render else _plain(messages, gen)
            except Exception:
                render, templated = None, False
                text = _plain(messages, gen)
            batch.append(text)
            owners.append(row_i)
        row_i += 1
        if len(batch) >= BATCH:
            run()
    if batch:
        run()
    return summarize(lengths, max_length) | {"chat_template": templated, "tokenizer": str(model_folder)}


def summarize(values: "array[int] | list[int]", max_length: int | None) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(values, dtype=np.int64)
    if a.size == 0:
        return {"rows": 0}
    out: dict[str, Any] = {"rows": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1),
                           "p50": int(np.percentile(a, 50)), "p90": int(np.percentile(a, 90)),
                           "p99": int(np.percentile(a, 99)), "max": int(a.max())}
    if max_length:
        out["max_length"] = int(max_length)
        out["over_max"] = int(np.count_nonzero(a > max_length))
    return out


def column_lengths(path: Path, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Characters per canonical column (messages: all contents of a row together)."""
    per: dict[str, array] = {c: array("I") for c in columns}
    for row in iter_rows(path):
        for c in columns:
            v = row.get(c)
            if isinstance(v, list):
                per[c].append(sum(len(m.get("content", "")) for m in v if isinstance(m, dict)))
            elif isinstance(v, str):
                per[c].append(len(v))
    return {c: summarize(a, None) for c, a in per.items() if len(a)}


def token_stats(path: Path, technique: str, model_folder: Path | None) -> DataStats:
    """The planner's view of a staged file: rows, mean and longest token length, and (RL) the
    longest reference answer, with the model's tokenizer (tokenizers only, no torch); about 4
    characters a token when the tokenizer is not on this machine. A fast estimate: the texts are
    joined without the chat template and a fixed overhead stands for its markers, unlike
    `token_lengths`, which renders every row the way the trainer will. RL's longest prompt is
    exact (`rl_prompt_tokens`)."""
    tok = None
    if model_folder is not None and (model_folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(model_folder / "tokenizer.json"))
    texts: list[str] = []
    references: list[str] = []       # RL: reference answers bound the planned completion length
    prompts: list[list[dict[str, str]]] = []
    for row in iter_rows(path):
        if technique in RL_TECHNIQUES:
            prompts.append(row["prompt"])
            ref = next((row[c] for c in REFERENCE_COLUMNS
                        if isinstance(row.get(c), (str, int, float)) and not isinstance(row.get(c), bool)), None)
            if ref is not None:
                references.append(str(ref))
        if "messages" in row:  # a multi-turn conversation: all of it goes through the model
            texts.append("\n".join(m["content"] for m in row["messages"]))
            continue
        prompt = row["prompt"] if isinstance(row["prompt"], str) else " ".join(m["content"] for m in row["prompt"])
        if technique == "dpo":
            texts.append(prompt + max(row["chosen"], row["rejected"], key=len))
        else:
            texts.append(prompt + row.get("completion", ""))
    overhead = 12  # chat template markers around two turns
    if tok is not None:
        lengths = [len(e.ids) + overhead for e in tok.encode_batch(texts, add_special_tokens=False)]
        ref_lengths = [len(e.ids) for e in tok.encode_batch(references, add_special_tokens=False)] if references else []
    else:
        lengths = [len(t) // 4 + overhead for t in texts]
        ref_lengths = [len(t) // 4 + 1 for t in references]
    return DataStats(rows=len(lengths), mean_tokens=sum(lengths) / max(1, len(lengths)), max_tokens=max(lengths),
                     reference_tokens=max(ref_lengths) if ref_lengths and len(ref_lengths) == len(lengths) else None,
                     prompt_tokens=rl_prompt_tokens(prompts, tok, model_folder) if prompts and tok else None)


def rl_prompt_tokens(prompts: list[list[dict[str, str]]], tok, folder: Path) -> int | None:
    """The longest of `prompts` (message lists) in tokens, rendered the way the GRPO recipe renders
    them: through the folder's chat template with the generation prompt (whatever the template adds,
    a default system prompt included), or, for a model without one, the contents joined by
    newlines. None when the template fails to render here (the plan then does not cut by it)."""
    render = _renderer(folder)
    if render is None and _template(folder)[0] is not None:
        return None  # a template this renderer cannot compile
    longest = 0
    for start in range(0, len(prompts), BATCH):
        try:
            texts = [render(m, True) if render else "\n".join(x["content"] for x in m)
                     for m in prompts[start:start + BATCH]]
        except Exception:  # noqa: BLE001 - a template may raise anything; transformers' may still render it
            return None
        longest = max([longest] + [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)])
    return longest
