"""The scheduler of the embedded engine: continuous batching over one decode loop per model.

Requests become rows (one per choice). A scheduler thread owns every forward pass:

1. an idle model waits up to `window_s` after the first request so that requests arriving
   together start together (up to `max_batch` rows);
2. waiting rows are prefilled together (left-padded, one forward, each row with its own
   adapter) and their first token is sampled;
3. they join the running rows at the next step: their KV cache is padded on the left to the
   running batch's length and concatenated, so rows of any adapter, prompt length and age
   share every decode step;
   the cache is transformers' DynamicCache with `GrowingLayer`s: keys and values live in
   buffers with room to grow, so a decode step writes one column per layer instead of
   copying the whole cache (DynamicLayer's torch.cat), which grew with length x batch;
4. a decode step feeds each row's last token, samples the next one per row (its own
   temperature, top_p and seed), streams new text, and drops finished rows.

Nothing here knows HTTP: rows report through the request's sink.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tuneloop.serving.engine import BASE_ADAPTER, SamplingParams, Sink, Ticket
from tuneloop.serving.text import find_stop, visible_text

log = logging.getLogger(__name__)


@dataclass
class Request:
    model: str
    adapter: str                         # adapter name or BASE_ADAPTER
    params: SamplingParams
    sink: Sink
    ticket: Ticket
    arrived: float = field(default_factory=time.monotonic)
    failed: bool = False

    def fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            self.sink("error", -1, exc)


class Row:
    """One choice of one request being generated."""

    def __init__(self, req: Request, choice: int, prompt: list[int], max_new: int, generator: torch.Generator | None):
        self.req, self.choice, self.prompt = req, choice, prompt
        self.max_new = max_new
        self.generator = generator
        self.out: list[int] = []
        self.count = 0                     # sampled tokens, the stop token included
        self.emitted = 0                   # characters of text already streamed
        self.finished: str | None = None

    @property
    def done(self) -> bool:
        return self.finished is not None or self.req.ticket.cancelled or self.req.failed

    def push(self, token: int, tok, eos: set[int]) -> None:
        self.count += 1
        stops = self.req.params.stop
        if token in eos:
            self.finished = "stop"
        else:
            self.out.append(token)
        text = tok.decode(self.out, skip_special_tokens=True)
        if stops and self.finished is None:
            at = find_stop(text, stops, max(0, self.emitted - max(map(len, stops))))
            if at >= 0:
                text, self.finished = text[:at], "stop"
        if self.finished is None and self.count >= self.max_new:
            self.finished = "length"
        end = visible_text(text, stops, self.finished is not None)
        if end > self.emitted:
            self.req.sink("text", self.choice, text[self.emitted:end])
            self.emitted = end
        if self.finished is not None:
            self.req.sink("finish", self.choice, (self.finished, self.count))


def _grow(buf: torch.Tensor | None, n: int, new: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Write `new` ([B, H, t, D]) after the first `n` positions of `buf`, reallocating with
    headroom (half again, at least 64 positions) when it does not fit."""
    t = new.shape[-2]
    if buf is None or buf.dim() != 4 or buf.shape[0] != new.shape[0] or buf.shape[-2] < n + t:
        need = n + t
        out = new.new_empty((*new.shape[:2], need + max(64, need // 2), new.shape[-1]))
        if n:
            out[:, :, :n] = buf[:, :, :n]
        buf = out
    buf[:, :, n:n + t] = new
    return buf, n + t


def _growing_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer whose `keys`/`values` are views of the first n positions of a larger
        buffer. Assigning them (merge, keep, batch_select_indices) replaces the buffer; the next
        update reallocates it with headroom. Numerically the same tensors as DynamicLayer's."""

        _k: torch.Tensor | None = None
        _v: torch.Tensor | None = None
        _nk = _nv = 0

        @property
        def keys(self):
            return self._k if self._k is None or self._k.dim() != 4 else self._k[:, :, :self._nk]

        @keys.setter
        def keys(self, t):
            self._k, self._nk = t, (t.shape[-2] if t is not None and t.dim() == 4 else 0)

        @property
        def values(self):
            return self._v if self._v is None or self._v.dim() != 4 else self._v[:, :, :self._nv]

        @values.setter
        def values(self, t):
            self._v, self._nv = t, (t.shape[-2] if t is not None and t.dim() == 4 else 0)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self._k, self._nk = _grow(self._k, self._nk, key_states)
            self._v, self._nv = _grow(self._v, self._nv, value_states)
            return self.keys, self.values

    return DynamicLayer, GrowingLayer


_LAYERS: tuple[type, type] | None = None


def new_cache(config):
    """A DynamicCache for `config` whose plain full-attention layers are `GrowingLayer`s
    (sliding-window and other special layers stay as transformers builds them)."""
    global _LAYERS
    from transformers import DynamicCache

    if _LAYERS is None:
        _LAYERS = _growing_layer_class()
    dynamic, growing = _LAYERS
    cache = DynamicCache(config=config)
    cache.layers = [growing() if type(layer) is dynamic else layer for layer in cache.layers]
    return cache


class Running:
    """The rows of one model that share a KV cache, and the tensors of the next decode step."""

    def __init__(self, rows: list[Row], cache, mask: torch.Tensor, pos: torch.Tensor, next_tok: torch.Tensor):
        self.rows, self.cache, self.mask, self.pos, self.next_tok = rows, cache, mask, pos, next_tok

    def joinable(self) -> bool:
        """Only caches of plain full-attention layers can be padded and concatenated."""
        return _LAYERS is not None and all(type(layer) is _LAYERS[1] for layer in self.cache.layers)

    def merge(self, other: Running) -> None:
        """Append `other`'s rows: left-pad the shorter cache and mask to a common length."""
        t = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            a, b = _left_pad(mine.keys, t), _left_pad(theirs.keys, t)
            mine.keys = torch.cat([a, b], 0)
            mine.values = torch.cat([_left_pad(mine.values, t), _left_pad(theirs.values, t)], 0)
        self.mask = torch.cat([F.pad(self.mask, (t - self.mask.shape[1], 0)), F.pad(other.mask, (t - other.mask.shape[1], 0))], 0)
        self.pos = torch.cat([self.pos, other.pos])
        self.next_tok = torch.cat([self.next_tok, other.next_tok])
        self.rows += other.rows

    def keep(self, idx: list[int]) -> None:
        """Keep rows `idx`; drop cache columns that are padding for every remaining row."""
        ix = torch.tensor(idx, device=self.mask.device)
        self.cache.batch_select_indices(ix)
        self.mask, self.pos, self.next_tok = self.mask[ix], self.pos[ix], self.next_tok[ix]
        self.rows = [self.rows[i] for i in idx]
        first = int(self.mask.any(0).nonzero()[0]) if self.rows else 0
        if first and self.joinable():
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]


def _left_pad(t: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(t, (0, 0, length - t.shape[-2], 0)) if t.shape[-2] < length else t


class ModelSlot:
    """One loaded model (the base with its LoRA set, or an inference component) and its rows."""

    def __init__(self, name: str, model, tok, loras=None):
        self.name, self.model, self.tok, self.loras = name, model, tok, loras
        self.waiting: deque[Row] = deque()
        self.running: Running | None = None
        cfg = model.generation_config
        eos = cfg.eos_token_id if cfg is not None else None
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            self.eos.add(tok.eos_token_id)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else next(iter(self.eos), 0)
        self.device = next(model.parameters()).device
        self.retired = False               # replaced: finish what runs, take nothing new

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or (self.running is not None and bool(self.running.rows))


class Stats:
    def __init__(self) -> None:
        self.forwards = self.prefills = self.decode_steps = self.mixed_forwards = 0
        self.rows_started = self.tokens = self.max_rows = 0
        self.adapter_sets: Counter[tuple[str, ...]] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=32)

    def record(self, kind: str, slot: ModelSlot, rows: list[Row]) -> None:
        adapters = tuple(sorted({r.req.adapter for r in rows}))
        self.forwards += 1
        if kind == "prefill":
            self.prefills += 1
            self.rows_started += len(rows)
        else:
            self.decode_steps += 1
        self.tokens += len(rows)
        self.max_rows = max(self.max_rows, len(rows))
        if len(adapters) > 1:
            self.mixed_forwards += 1
        if len(self.adapter_sets) < 256 or adapters in self.adapter_sets:
            self.adapter_sets[adapters] += 1
        self.recent.append({"kind": kind, "model": slot.name, "rows": len(rows), "adapters": list(adapters)})

    def to_dict(self) -> dict[str, Any]:
        return {"forwards": self.forwards, "prefills": self.prefills, "decode_steps": self.decode_steps,
                "mixed_forwards": self.mixed_forwards, "rows_started": self.rows_started,
                "tokens_generated": self.tokens, "max_rows": self.max_rows,
                "adapter_sets": [{"adapters": list(k), "forwards": v} for k, v in self.adapter_sets.most_common(20)],
                "recent": list(self.recent)[-8:]}


class Scheduler(threading.Thread):
    """Owns every forward pass. Other threads add rows with `enqueue` (never blocked by a step)
    and change models while holding `lock`, which each step holds from start to end."""

    def __init__(self, *, max_batch: int = 32, window_s: float = 0.01):
        super().__init__(name="tuneloop-scheduler", daemon=True)
        self.max_batch, self.window_s = max_batch, window_s
        self.slots: list[ModelSlot] = []
        self.lock = threading.RLock()                   # models and slots; held by each step
        self.wake = threading.Condition(threading.Lock())  # waiting rows; new work wakes the loop
        self.stats = Stats()
        self.stopping = False

    # ---- called from other threads ------------------------------------------------------------
    def enqueue(self, slot: ModelSlot, req: Request, prompts: list[list[int]], max_new: list[int]) -> None:
        rows = []
        p = req.params
        for i, prompt in enumerate(prompts):
            for j in range(p.n):
                choice = i * p.n + j
                gen = None
                if p.temperature > 0:
                    gen = torch.Generator(device=slot.device)
                    gen.manual_seed(p.seed + choice if p.seed is not None else random.getrandbits(63))
                rows.append(Row(req, choice, prompt, max_new[i], gen))
        with self.wake:
            slot.waiting.extend(rows)
            self.wake.notify()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self.wake:
                while not self.stopping and not any(s.busy for s in self.slots):
                    self.wake.wait()
                if self.stopping:
                    return
            delays: list[float] = []
            worked = False
            with self.lock:
                for slot in list(self.slots):
                    if slot.busy:
                        d = self._step(slot)
                        if d is None:
                            worked = True
                        else:
                            delays.append(d)
                    if slot.retired and not slot.busy:
                        self.slots.remove(slot)
            if delays and not worked:  # only idle models inside their window: sleep until one is due
                with self.wake:
                    self.wake.wait(min(delays))

    def _step(self, slot: ModelSlot) -> float | None:
        """One forward for `slot`; returns seconds to wait when it is idle inside its window."""
        running = slot.running.rows if slot.running else []
        admit: list[Row] = []
        while slot.waiting and slot.waiting[0].done:
            slot.waiting.popleft()
        if slot.waiting and (not running or slot.running.joinable()):
            if not running:
                age = time.monotonic() - slot.waiting[0].req.arrived
                if age < self.window_s and len(slot.waiting) < self.max_batch:
                    return self.window_s - age
            while slot.waiting and len(running) + len(admit) < self.max_batch:
                row = slot.waiting.popleft()
                if not row.done:
                    admit.append(row)
        try:
            if admit:
                self._prefill(slot, admit)
            elif running:
                self._decode(slot)
        except Exception as e:  # a failed forward fails its requests, never the scheduler
            log.exception("forward failed on %s", slot.name)
            for row in admit + running:
                row.req.fail(e)
            slot.running = None
            return None
        self._prune(slot)
        return None

    def _select(self, slot: ModelSlot, rows: list[Row]) -> None:
        if slot.loras is not None:
            slots = []
            for row in rows:
                name = row.req.adapter
                if name != BASE_ADAPTER and name not in slot.loras:
                    row.req.fail(RuntimeError(f"adapter {name} was unloaded while answering"))
                slots.append(0 if name == BASE_ADAPTER or name not in slot.loras else slot.loras.slot(name))
            slot.loras.select(slots)

    @torch.inference_mode()
    def _prefill(self, slot: ModelSlot, rows: list[Row]) -> None:
        length = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), length), slot.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, length - len(r.prompt):] = torch.tensor(r.prompt)
            mask[i, length - len(r.prompt):] = 1
        ids, mask = ids.to(slot.device), mask.to(slot.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        self._select(slot, rows)
        cache = new_cache(slot.model.config)
        out = slot.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        self.stats.record("prefill", slot, rows)
        tokens = self._sample(out.logits[:, -1, :], rows)
        part = Running(rows, cache, mask, pos[:, -1], tokens)
        self._push(slot, rows, tokens)
        if slot.running is None or not slot.running.rows:
            slot.running = part
        else:
            slot.running.merge(part)

    @torch.inference_mode()
    def _decode(self, slot: ModelSlot) -> None:
        b = slot.running
        self._select(slot, b.rows)
        mask = torch.cat([b.mask, b.mask.new_ones((len(b.rows), 1))], 1)
        pos = b.pos + 1
        out = slot.model(input_ids=b.next_tok[:, None], attention_mask=mask, position_ids=pos[:, None],
                         past_key_values=b.cache, use_cache=True)
        self.stats.record("decode", slot, b.rows)
        b.mask, b.pos = mask, pos
        b.next_tok = self._sample(out.logits[:, -1, :], b.rows)
        self._push(slot, b.rows, b.next_tok)

    def _push(self, slot: ModelSlot, rows: list[Row], tokens: torch.Tensor) -> None:
        for row, token in zip(rows, tokens.tolist()):
            if not row.done:
                row.push(token, slot.tok, slot.eos)

    def _prune(self, slot: ModelSlot) -> None:
        b = slot.running
        if b is None:
            return
        keep = [i for i, r in enumerate(b.rows) if not r.done]
        if not keep:
            slot.running = None
        elif len(keep) < len(b.rows):
            b.keep(keep)

    @staticmethod
    def _sample(logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """Greedy for temperature 0; otherwise softmax(logits / T), nucleus-filtered by top_p,
        sampled with the row's own generator (its seed)."""
        tokens = logits.argmax(-1)
        for i, row in enumerate(rows):
            p = row.req.params
            if p.temperature <= 0 or row.generator is None:
                continue
            # a temperature near 0 (1e-300 is valid JSON) would scale logits to inf and softmax to NaN:
            # below 1e-6 the distribution is greedy in all but name, so the scale stops there
            probs = torch.softmax(logits[i].float() / max(p.temperature, 1e-6), -1)
            if p.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                # keep the smallest prefix whose mass reaches top_p (the first token always stays)
                drop = sorted_p.cumsum(-1) - sorted_p >= p.top_p
                drop[0] = False  # a top_p below float32's range (5e-324) rounds to 0 and would drop it
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            tokens[i] = torch.multinomial(probs, 1, generator=row.generator)[0]
        return tokens
