"""HTTP reward endpoints (the self-hosted Lambda equivalent) and the retry helper judges share.

An endpoint gets a POST with a JSON array of items, `{id, messages, completion, ...row columns}`,
and answers with a JSON array of `{id, aggregate_reward_score, metrics_list: [{name, value, type}]}`
(one per item, matched by id), either directly or inside the seed's Lambda wrapper
`{"statusCode": 200, "body": "<that array as a JSON string>"}`. Batches go out in parallel
(`concurrency`, default 4) of at most `batch_size` items (default 32); each request has a timeout
and is retried with exponential backoff on connection errors, timeouts, 429 and 5xx.
`TUNELOOP_REWARD_HTTP_TOKEN`, when set, is sent as `Authorization: Bearer ...`. The URL is
checked by `tuneloop.netguard` before anything is sent, and again on every redirect.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.rewards.base import RewardFunction, Sample, Score, coerce

RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


class HttpFailure(Exception):
    pass


def post_json(client, url: str, body: Any, *, retries: int = 3, backoff_s: float = 0.5,
              headers: dict[str, str] | None = None) -> Any:
    """POST JSON and return the decoded answer, retrying transient failures with backoff
    (backoff_s, 2x, 4x ... plus jitter). Raises HttpFailure with the last reason."""
    import httpx

    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1) * (1 + 0.25 * random.random()))
        try:
            r = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            last = "timed out"
            continue
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
            continue
        except ValidationError as e:  # netguard refused the URL (or a redirect): never retried
            raise HttpFailure(e.message) from None
        if r.status_code in RETRY_STATUS:
            last = f"HTTP {r.status_code}: {r.text[:200]}"
            continue
        if r.status_code >= 400:
            raise HttpFailure(f"HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json()
        except ValueError:
            raise HttpFailure(f"the answer is not JSON: {r.text[:200]!r}") from None
    raise HttpFailure(f"{last} (after {retries + 1} attempts)")


def unwrap(answer: Any) -> Any:
    """The item list of an answer: a list as is, or the body of a `{statusCode, body}` wrapper."""
    if isinstance(answer, dict) and "statusCode" in answer:
        status = answer.get("statusCode")
        body = answer.get("body")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError:
                pass
        if not isinstance(status, int) or status >= 400:
            raise HttpFailure(f"the endpoint answered statusCode {status}: {str(body)[:300]}")
        answer = body
    if isinstance(answer, dict):
        for key in ("results", "items", "rewards", "data"):
            if isinstance(answer.get(key), list):
                return answer[key]
        if "aggregate_reward_score" in answer:
            return [answer]
    if not isinstance(answer, list):
        raise HttpFailure(f"expected a JSON array of {{id, aggregate_reward_score, metrics_list}}, got "
                          f"{type(answer).__name__}: {str(answer)[:200]}")
    return answer


class HttpReward(RewardFunction):
    def __init__(self, url: str, *, timeout_s: float = 30.0, retries: int = 3, concurrency: int = 4,
                 batch_size: int = 32, backoff_s: float = 0.5):
        self.url, self.name = url, url
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.concurrency, self.batch_size = max(1, concurrency), max(1, batch_size)
        self._client = None
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="reward-http")

    def _http(self):
        if self._client is None:
            import httpx

            from tuneloop.netguard import guarded_client

            self._client = guarded_client(timeout=self.timeout_s,
                                          limits=httpx.Limits(max_connections=self.concurrency))
        return self._client

    def _headers(self) -> dict[str, str]:
        token = os.environ.get("TUNELOOP_REWARD_HTTP_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _batch(self, samples: list[Sample]) -> list[Score]:
        items = [s.item() for s in samples]
        try:
            answer = unwrap(post_json(self._http(), self.url, items, retries=self.retries, backoff_s=self.backoff_s,
                                      headers=self._headers()))
        except HttpFailure as e:
            return [Score.failed("http", f"{self.url}: {e}")] * len(samples)
        by_id: dict[str, Any] = {}
        for entry in answer:
            if isinstance(entry, dict) and "id" in entry:
                by_id[str(entry["id"])] = entry
        if not by_id and len(answer) == len(samples):  # no ids: answers in request order
            by_id = {s.id: a for s, a in zip(samples, answer)}
        out = []
        for s in samples:
            if s.id not in by_id:
                out.append(Score.failed("http", f"{self.url} returned no result for item id {s.id!r}"))
            else:
                out.append(coerce(by_id[s.id], what="endpoint returned"))
        return out

    def score(self, samples: list[Sample]) -> list[Score]:
        batches = [samples[i:i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        if len(batches) == 1:
            return self._batch(batches[0])
        return [s for part in self._pool.map(self._batch, batches) for s in part]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._pool.shutdown(wait=False)
