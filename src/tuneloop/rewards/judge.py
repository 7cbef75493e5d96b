"""LLM judges for RLAIF and score_model graders, and reading a score out of a judge's answer.

A judge is a local model (catalog id, built-in, model folder or adapter folder; loaded once in
the trainer's process and run on batches) or any OpenAI-compatible endpoint,
`openai:MODEL@BASE_URL` (key from TUNELOOP_JUDGE_API_KEY or OPENAI_API_KEY; without `@BASE_URL`,
OPENAI_BASE_URL or api.openai.com). Endpoint calls run concurrently (8 at a time) with retries.
`JudgeReward` renders the reward prompt per sample, asks the judge, parses the score and caches
it per rendered prompt (that is, per prompt, completion and reference), so a completion seen
twice costs one call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tuneloop.rewards.base import RewardFunction, Sample, Score
from tuneloop.rewards.prompts import PromptError, Renderer, RewardPrompt

log = logging.getLogger(__name__)

_NUM = r"-?\d+(?:\.\d+)?"
_FRACTION = re.compile(rf"({_NUM})\s*(?:/|out of)\s*({_NUM})", re.I)
_LABELLED = re.compile(rf"(?:score|rating|grade|points?)\s*(?:is|of|=|:)?\s*\**\s*({_NUM})(?:\s*(?:/|out of)\s*({_NUM}))?",
                       re.I)
_BRACKETS = re.compile(rf"\[\[\s*({_NUM})\s*\]\]")
_ANY = re.compile(_NUM)
_JSON_KEYS = ("score", "rating", "grade", "value", "reward")


def parse_score(text: str, scale: tuple[float, float] = (0.0, 10.0), normalise: bool = True) -> float | None:
    """The score in a judge's answer, or None when there is none (or it is out of range).

    Reads, in order: a JSON object's score/rating/grade key; "Score: 7", "Rating: 8/10",
    "score of 7 out of 10"; "[[7]]"; "7/10" anywhere; an answer that is only a number; an answer
    with exactly one number. "X/Y" is the fraction X/Y whatever the scale; other numbers are read
    on `scale`. With `normalise` the result is in [0, 1], else on `scale`."""
    if not isinstance(text, str):
        return None
    lo, hi = scale
    t = text.strip()

    def on_scale(x: float) -> float | None:
        if not lo <= x <= hi:
            return None
        return (x - lo) / (hi - lo) if normalise else x

    def fraction(x: float, y: float) -> float | None:
        if y <= 0 or not 0 <= x <= y:
            return None
        return x / y if normalise else lo + x / y * (hi - lo)

    for candidate in _json_objects(t):
        for key in _JSON_KEYS:
            value = candidate.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return on_scale(float(value))
            if isinstance(value, str) and re.fullmatch(_NUM, value.strip()):
                return on_scale(float(value))
    m = _LABELLED.search(t)
    if m:
        return fraction(float(m.group(1)), float(m.group(2))) if m.group(2) else on_scale(float(m.group(1)))
    m = _BRACKETS.search(t)
    if m:
        return on_scale(float(m.group(1)))
    fractions = _FRACTION.findall(t)
    if fractions:
        x, y = fractions[-1]
        return fraction(float(x), float(y))
    bare = t.rstrip(".!").strip().strip("*").strip()
    if re.fullmatch(_NUM, bare):
        return on_scale(float(bare))
    numbers = _ANY.findall(t)
    if len(numbers) == 1:
        return on_scale(float(numbers[0]))
    return None


def _json_objects(text: str) -> list[dict[str, Any]]:
    out = []
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            value = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


class Judge:
    name = "judge"

    def complete(self, conversations: list[list[dict[str, str]]], temperature: float | None = None,
                 max_tokens: int | None = None) -> list[str | Exception]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def parse_judge_ref(ref: str) -> tuple[str, str, str | None]:
    """("openai", model, base_url) or ("local", ref, None)."""
    if ref.startswith("openai:"):
        rest = ref[len("openai:"):]
        model, _, base = rest.partition("@")
        if not model:
            raise ValueError(f"judge {ref!r}: expected openai:MODEL[@BASE_URL]")
        return "openai", model, base or None
    return "local", ref, None


class OpenAIJudge(Judge):
    def __init__(self, model: str, base_url: str | None = None, *, concurrency: int = 8, timeout_s: float = 60.0,
                 retries: int = 3, max_tokens: int = 64):
        self.model = model
        from tuneloop.netguard import check_url

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        check_url(self.base_url, what="judge endpoint")
        self.name = f"openai:{model}@{self.base_url}"
        self.api_key = os.environ.get("TUNELOOP_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.timeout_s, self.retries, self.max_tokens = timeout_s, retries, max_tokens
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge")
        self._client = None

    def _http(self):
        if self._client is None:
            from tuneloop.netguard import guarded_client

            self._client = guarded_client(timeout=self.timeout_s)
        return self._client

    def _one(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int | None) -> str | Exception:
        from tuneloop.rewards.http import HttpFailure, post_json

        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens or self.max_tokens,
                                "temperature": 0.0 if temperature is None else temperature}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            answer = post_json(self._http(), self.base_url + "/chat/completions", body, retries=self.retries,
                               headers=headers)
            return str(answer["choices"][0]["message"]["content"] or "")
        except HttpFailure as e:
            return e
        except (KeyError, IndexError, TypeError) as e:
            return HttpFailure(f"unexpected chat completion answer ({type(e).__name__}: {e})")

    def complete(self, conversations, temperature=None, max_tokens=None):
        return list(self._pool.map(lambda m: self._one(m, temperature, max_tokens), conversations))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._pool.shutdown(wait=False)


class LocalJudge(Judge):
    """A model in this process, greedy, batched (left padding), through its chat template."""

    def __init__(self, ref: str, models_dir=None, *, batch_size: int = 16, max_tokens: int = 16):
        check_local_model(ref, models_dir)   # a missing model fails when the reward is resolved, not at step 1
        self.ref, self.name = ref, ref
        self.models_dir = models_dir
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self._model = self._tok = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from pathlib import Path

        import torch

        from tuneloop.evaluation.quick import load_for_eval

        base, adapter = resolve_local_model(self.ref, self.models_dir)
        model, tok = load_for_eval(base, adapter)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model, self._tok, self._device = model.to(device), tok, device
        log.info("judge %s loaded from %s%s", self.ref, base, f" + {Path(adapter).name}" if adapter else "")

    def complete(self, conversations, temperature=None, max_tokens=None):
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            tok, model = self._tok, self._model
            texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                     if getattr(tok, "chat_template", None) else "\n".join(x["content"] for x in m)
                     for m in conversations]
            out: list[str | Exception] = []
            side, tok.padding_side = tok.padding_side, "left"
            try:
                for i in range(0, len(texts), self.batch_size):
                    enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self._device)
                    with torch.no_grad():
                        ids = model.generate(**enc, max_new_tokens=max_tokens or self.max_tokens, do_sample=False,
                                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                    out += [tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in ids]
            finally:
                tok.padding_side = side
            return out

    def close(self) -> None:
        self._model = self._tok = None


def resolve_local_model(ref: str, models_dir=None) -> tuple[str, str | None]:
    """(base model folder or Hub id, adapter folder or None) of a local judge (tuneloop.models.resolve);
    a reference that names no model is a ValueError, the reward's configuration error, carrying the
    resolver's fix (`hf download ID` for a Hub id not in the local cache)."""
    from tuneloop.errors import TuneloopError
    from tuneloop.models.resolve import resolve

    try:
        model = resolve(ref, use="judge", models_dir=models_dir)
        return model.load_path(), model.adapter
    except TuneloopError as e:
        raise _config_error(e) from None


def check_local_model(ref: str, models_dir=None) -> None:
    """That a local judge's model is on this machine (a Hub id in the local cache), without
    building a built-in or converting a GGUF file; ValueError as resolve_local_model."""
    from tuneloop.errors import TuneloopError
    from tuneloop.models.resolve import resolve

    try:
        model = resolve(ref, use="judge", models_dir=models_dir)
        if not model.builtin and model.gguf is None:
            model.load_path()   # folders as they are; a Hub id: its cached snapshot or the `hf download` error
    except TuneloopError as e:
        raise _config_error(e) from None


def _config_error(e) -> ValueError:
    """A resolver's TuneloopError as the reward's configuration error: its message and its fix."""
    message = e.message.rstrip()
    if e.hint:
        message += ("" if message.endswith((".", "!", "?")) else ".") + " " + e.hint
    return ValueError(message)


def make_judge(ref: str, models_dir=None) -> Judge:
    kind, model, base = parse_judge_ref(ref)
    if kind == "openai":
        return OpenAIJudge(model, base)
    return LocalJudge(model, models_dir)


class JudgeReward(RewardFunction):
    """RLAIF: score = the judge's answer to the rendered reward prompt, normalised to [0, 1]."""

    def __init__(self, prompt: RewardPrompt, judge: Judge, cache_size: int = 100_000):
        self.prompt, self.judge = prompt, judge
        self.renderer = Renderer(prompt)
        self.name = f"{prompt.name} ({judge.name})"
        self._cache: OrderedDict[str, Score] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.calls = self.cache_hits = self.unparseable = self.retried = 0
        self.retry_unparseable = True

    def score(self, samples: list[Sample]) -> list[Score]:
        out: list[Score | None] = [None] * len(samples)
        todo: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            try:
                text = self.renderer.render(s)
            except PromptError as e:
                out[i] = Score.failed("config", str(e))
                continue
            with self._lock:
                hit = self._cache.get(text)
            if hit is not None:
                out[i] = hit
                self.cache_hits += 1
            else:
                if text in todo:  # the same judge prompt twice in one batch: asked once
                    self.cache_hits += 1
                todo.setdefault(text, []).append(i)
        texts = list(todo)
        if texts:
            answers = self.judge.complete([[{"role": "user", "content": t}] for t in texts])
            self.calls += len(texts)
            # an answer without a score is asked once more (judges sampled at temperature > 0 often comply)
            again = [j for j, a in enumerate(answers) if isinstance(a, str) and parse_score(a, self.prompt.scale) is None]
            if again and self.retry_unparseable:
                retried = self.judge.complete([[{"role": "user", "content": texts[j]}] for j in again])
                self.calls += len(again)
                self.retried += len(again)
                for j, a in zip(again, retried):
                    if isinstance(a, str) and parse_score(a, self.prompt.scale) is not None:
                        answers[j] = a
            for text, answer in zip(texts, answers):
                if isinstance(answer, Exception):
                    score = Score.failed("http", f"judge {self.judge.name}: {answer}")
                else:
                    value = parse_score(answer, self.prompt.scale)
                    if value is None:
                        self.unparseable += 1
                        score = Score.failed("unparseable", f"judge answer has no score on the "
                                             f"{self.prompt.scale[0]:g}-{self.prompt.scale[1]:g} scale: {answer[:160]!r}")
                    else:
                        score = Score(value)
                        with self._lock:
                            self._cache[text] = score
                            if len(self._cache) > self._cache_size:
                                self._cache.popitem(last=False)
                for i in todo[text]:
                    out[i] = score
        return [s if s is not None else Score.failed("crash", "no result") for s in out]

    def close(self) -> None:
        self.judge.close()
