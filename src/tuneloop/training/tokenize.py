"""SFT rows as token ids and the mask of the tokens the loss covers, for any chat template. The one
place a staged SFT row is tokenized: the SFT recipe hands TRL the result as a pre-tokenized
dataset, and evaluation (loss, perplexity, token accuracy) scores the same tokens.

    enc = encode_row(tok, {"messages": [{"role": "system", ...}, {"role": "user", ...}, ...]})
    enc = encode_row(tok, {"prompt": "2+2?", "completion": "4"}, where="train.jsonl row 3")
    enc.input_ids, enc.mask, enc.method     # mask[k] == 1: token k is trained
    columns, summary = tokenize_rows(tok, rows, max_length=512, where="train.jsonl")

What is trained. With a chat template, every assistant turn of a `messages` row, or the
completion of a prompt/completion row (rendered as a user turn, or the prompt's messages, then an
assistant turn): all the turn adds after the generation prompt, that is its content, the
template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, eos), so the model
learns to stop, and the whitespace the template writes after that token before the next turn
(ChatML's and Gemma's "\n"). That newline is kept on purpose: a generation stops at the end-of-turn
token, so the model is never asked for it and it costs one easy token per turn, while keeping it
makes the three ways below agree on one rule (the tokens between the generation prompt and the
next turn) and keeps TRL's completion-only loss, which trained prompt/completion rows before, and
every evaluation number of earlier jobs unchanged. Without a chat template (a base model),
prompt + completion as plain text with eos appended, the loss on the completion and eos;
`messages` rows need a template and are refused.

How the spans are found, for templates with and without `{% generation %}` markers:
1. markers: the template's own assistant mask (`return_assistant_tokens_mask`), each span closed
   the same way: through the end-of-turn token when the markers leave it out, then the whitespace;
2. prefix rendering: for assistant turn i, messages[:i] with the generation prompt and messages[:i+1]
   are rendered and tokenized; when both are token prefixes of the whole conversation, the turn is
   the tokens between them;
3. character offsets: some templates render earlier turns differently (drop thinking, add a
   marker to the last turn only), so the prefix property fails; then each assistant content is
   located in the full rendering and mapped to tokens by their offsets, then closed as above;
4. otherwise the row is refused (a DatasetError naming it): never the whole sequence silently.

The mask is by position, never by token id, so a pad token equal to eos (SmolLM2) cannot mask
the real eos out: TRL's collator pads labels with -100 by length. Truncation to `max_length` cuts
ids and mask together; rows left with no trained token are dropped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from tuneloop.errors import DatasetError

_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class _NotPrefix(Exception):
    """The template does not render the conversation's turns as prefixes of one another."""


@dataclass(frozen=True)
class Encoded:
    """One row: token ids, 1 where the loss applies, and how the spans were found
    ("markers", "prefix", "offsets", "plain")."""

    input_ids: list[int]
    mask: list[int]
    method: str

    @property
    def trained(self) -> int:
        return sum(self.mask)

    def truncated(self, max_length: int | None) -> "Encoded":
        if max_length is None or len(self.input_ids) <= max_length:
            return self
        return Encoded(self.input_ids[:max_length], self.mask[:max_length], self.method)


@dataclass
class Summary:
    """What tokenizing a file did: rows kept, rows dropped by truncation, the span methods used."""

    rows: int = 0
    dropped: int = 0
    trained_tokens: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    chat_template: bool = True

    def line(self, where: str, max_length: int | None) -> str:
        how = ", ".join(f"{n} by {m}" for m, n in sorted(self.methods.items()))
        if self.chat_template:
            text = (f"{where}: {self.rows} rows through the chat template, loss on the assistant turns "
                    f"through their end-of-turn token ({how})")
        else:
            text = (f"{where}: the model has no chat template, so {self.rows} rows train as plain "
                    "prompt + completion text with the loss on the completion and eos")
        if self.dropped:
            text += f"; {self.dropped} rows dropped: no trained token within max_length {max_length}"
        return text


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def has_generation_markers(tok) -> bool:
    template = getattr(tok, "chat_template", None)
    return isinstance(template, str) and bool(_MARKER.search(template))


def special_ids(tok) -> frozenset[int]:
    """Ids of special tokens: the named ones and every added token marked special (end-of-turn
    tokens such as <|eot_id|> are often only the latter)."""
    ids = set(getattr(tok, "all_special_ids", []) or [])
    for i, t in (getattr(tok, "added_tokens_decoder", None) or {}).items():
        if getattr(t, "special", False):
            ids.add(int(i))
    return frozenset(ids)


def conversation(row: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The messages of an SFT row and whether every assistant turn trains (messages rows) or only
    the last (prompt/completion: the prompt's own messages are context)."""
    if "messages" in row:
        return list(row["messages"]), True
    prompt = row["prompt"]
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return msgs + [{"role": "assistant", "content": row["completion"]}], False


def encode_row(tok, row: dict[str, Any], where: str = "row") -> Encoded:
    """Token ids and trained-token mask of one staged SFT row (prompt/completion or messages)."""
    if not has_chat_template(tok):
        if "messages" in row:
            raise DatasetError(f"{where}: multi-turn 'messages' data needs a chat template to be rendered, and "
                               "this model has none.",
                               hint="Use a chat (instruct) model, or prompt/completion rows, which a base model "
                                    "trains on as plain text.", param="dataset")
        prompt = row["prompt"]
        if not isinstance(prompt, str):
            prompt = "\n".join(m["content"] for m in prompt)
        return encode_plain(tok, prompt, row["completion"])
    messages, every_turn = conversation(row)
    return encode_messages(tok, messages, every_turn=every_turn, where=where)


def encode_plain(tok, prompt: str, completion: str) -> Encoded:
    """A base model's row: prompt (with the tokenizer's own special tokens, e.g. bos, as TRL and
    pretraining have them) + completion + eos; the loss on the completion and eos."""
    p_ids = list(tok(prompt)["input_ids"])
    eos = tok.eos_token_id
    if eos is not None and p_ids[-1:] == [eos] and not prompt.endswith(tok.eos_token or "\0"):
        p_ids.pop()   # a tokenizer that appends eos to every text: the prompt does not end the sequence
    c_ids = list(tok(completion, add_special_tokens=False)["input_ids"])
    if eos is not None and (not c_ids or c_ids[-1] != eos):
        c_ids.append(eos)
    return Encoded(p_ids + c_ids, [0] * len(p_ids) + [1] * len(c_ids), "plain")


def encode_messages(tok, messages: list[dict[str, Any]], *, every_turn: bool = True, where: str = "row") -> Encoded:
    """A conversation through the chat template: every assistant turn trained (or only the last)."""
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not turns:
        raise DatasetError(f"{where}: the conversation has no assistant turn, so nothing would be trained.",
                           hint="Each messages row needs at least one {\"role\": \"assistant\"} message.",
                           param="dataset")
    if not every_turn:
        turns = turns[-1:]
    try:
        full_text = _render(tok, messages, False)
    except Exception as e:  # a template that raises on this conversation (roles, order)
        raise DatasetError(f"{where}: the chat template cannot render this conversation: {e}",
                           hint="Fix the row's roles and order for this model's template.", param="dataset") from e
    if has_generation_markers(tok):
        enc = _by_markers(tok, messages, every_turn)
        if enc is not None:
            return enc
    full, prefixes = _prefix_ids(tok, messages, turns, full_text)
    enc = _by_prefix(full, prefixes)
    if enc is None:
        starts = [len(g) if g is not None and full[:len(g)] == g else None for g, _ in prefixes]
        enc = _by_offsets(tok, messages, turns, full_text, full, starts)
    if enc is None:
        raise DatasetError(
            f"{where}: cannot tell which tokens are the assistant's: this chat template renders earlier turns "
            "differently once the conversation goes on, and an assistant reply does not appear as written in "
            "the rendered conversation, so training it would put the loss on the wrong tokens.",
            hint="Check the row's assistant contents (e.g. <think> blocks the template strips) or use a model "
                 "whose template renders each turn as written.", param="dataset")
    return enc


def _render(tok, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _ids(tok, texts: list[str]) -> list[list[int]]:
    return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]


def _by_markers(tok, messages, every_turn: bool) -> Encoded | None:
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, marked = list(out["input_ids"]), list(out["assistant_masks"])
    runs, k = [], 0
    while k < len(marked):  # the marked runs, one per assistant turn
        if marked[k]:
            start = k
            while k < len(marked) and marked[k]:
                k += 1
            runs.append((start, k))
        else:
            k += 1
    if not runs:  # markers that did not fire for this conversation: find the spans another way
        return None
    if not every_turn:  # only the last turn (the completion) trains
        runs = runs[-1:]
    special, mask = special_ids(tok), [0] * len(ids)
    for start, end in runs:
        end = _close(tok, ids, end, special)
        mask[start:end] = [1] * (end - start)
    return Encoded(ids, mask, "markers")


def _prefix_ids(tok, messages, turns: list[int], full_text: str
                ) -> tuple[list[int], list[tuple[list[int] | None, list[int] | None]]]:
    """The whole conversation's ids, and per trained turn i the ids of messages[:i] with the
    generation prompt and of messages[:i+1] (None where the template refuses that partial
    conversation)."""
    texts, slots = [full_text], []
    for i in turns:
        pair = []
        for part, gen in ((messages[:i], True), (messages[:i + 1], False)):
            try:
                texts.append(_render(tok, part, gen))
                pair.append(len(texts) - 1)
            except Exception:  # e.g. a template that wants the conversation to end on an assistant turn
                pair.append(None)
        slots.append(pair)
    encoded = _ids(tok, texts)
    return encoded[0], [tuple(None if k is None else encoded[k] for k in pair) for pair in slots]


def _by_prefix(full: list[int], prefixes) -> Encoded | None:
    """Each turn is the tokens between its generation prompt and its own end, when both are token
    prefixes of the whole conversation (None when one is not)."""
    mask = [0] * len(full)
    for g, f in prefixes:
        if g is None or f is None or len(f) <= len(g) or full[:len(g)] != g or full[:len(f)] != f:
            return None
        mask[len(g):len(f)] = [1] * (len(f) - len(g))   # all the turn adds: content, end token, separator
    return Encoded(full, mask, "prefix")


def _close(tok, ids: Sequence[int], end: int, special: frozenset[int]) -> int:
    """Where a turn's trained tokens end, given where its content ends: through the end-of-turn
    token (a special token after at most whitespace) unless the span already ends with one, then
    through the whitespace after it, up to the next turn. Without a special end token the span
    stays as it is."""
    def blank(k: int) -> bool:
        return ids[k] not in special and not tok.decode([ids[k]]).strip()

    if ids[end - 1] not in special:
        k = end
        while k < len(ids) and blank(k):
            k += 1
        if k == len(ids) or ids[k] not in special:
            return end
        end = k + 1
    while end < len(ids) and blank(end):
        end += 1
    return end


def _by_offsets(tok, messages, turns: list[int], full_text: str, full: list[int], starts: list[int | None]
                ) -> Encoded | None:
    """Each trained turn from its content's place in the full rendering, by character offsets:
    from the end of its generation prompt where that is a token prefix of the conversation
    (`starts`, so a turn starts where the prefix way would start it), else from its content."""
    try:
        enc = tok(full_text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer has no offsets
        return None
    ids, offsets, special = list(enc["input_ids"]), list(enc["offset_mapping"]), special_ids(tok)
    if ids != full:  # the starts index `full`; a tokenizer that tokenizes one text two ways gets none
        starts = [None] * len(starts)
    trained, mask, cursor, done = dict(zip(turns, starts)), [0] * len(enc["input_ids"]), 0, 0
    for i, m in enumerate(messages):
        content = m.get("content")
        text = content.strip() if isinstance(content, str) else ""
        pos = full_text.find(text, cursor) if text else -1
        if pos < 0:
            if i in trained:
                return None   # an assistant reply the template rewrites: its tokens are unknown
            continue          # a system or user turn the template reworded: search on from here
        cursor = pos + len(text)
        if i not in trained:
            continue
        first = next((k for k, (a, b) in enumerate(offsets) if b > pos), None)
        last = next((k for k in range(len(offsets) - 1, -1, -1) if offsets[k][0] < cursor), None)
        if first is None or last is None or last < first:
            return None
        start = trained[i]
        if start is not None and done <= start <= first:
            first = start   # what the template writes before the content within the turn (a <think> block)
        stop = _close(tok, ids, last + 1, special)
        mask[first:stop] = [1] * (stop - first)
        cursor, done = max(cursor, offsets[stop - 1][1]), stop
    return Encoded(ids, mask, "offsets")


def tokenize_rows(tok, rows: Iterable[dict[str, Any]], max_length: int | None, where: str
                  ) -> tuple[dict[str, list[list[int]]], Summary]:
    """The columns of a pre-tokenized SFT dataset ({"input_ids", "assistant_masks"}, the mask
    column TRL always applies), truncated to `max_length`, without rows left with nothing to train."""
    columns: dict[str, list[list[int]]] = {"input_ids": [], "assistant_masks": []}
    summary = Summary(chat_template=has_chat_template(tok))
    for n, row in enumerate(rows, 1):
        enc = encode_row(tok, row, where=f"{where} row {n}").truncated(max_length)
        if not enc.trained:
            summary.dropped += 1
            continue
        columns["input_ids"].append(enc.input_ids)
        columns["assistant_masks"].append(enc.mask)
        summary.rows += 1
        summary.trained_tokens += enc.trained
        summary.methods[enc.method] = summary.methods.get(enc.method, 0) + 1
    return columns, summary
