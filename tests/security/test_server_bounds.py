"""The OpenAI-compatible server refuses hostile input cleanly: request bodies over the cap get 413
before they are read (a 50 MB message leaves the server's memory flat), prompts too long for the
context and requests asking for too many tokens get 400 before the tokenizer runs, every field is
bounded, and lora_path / model_path load only from under the server's model roots (URLs only when
allowed, through netguard). Names resolve through a stub resolver: no traffic leaves the machine.

    pytest tests/security/test_server_bounds.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import REPO, cli
from tests.unit.test_serving_adapters import make_adapter
from tests.unit.test_serving_protocol import ScriptedEngine
from tuneloop import netguard
from tuneloop.errors import ValidationError
from tuneloop.serving.limits import CHARS_PER_TOKEN_BOUND, BodyLimit, Limits
from tuneloop.serving.weights import WeightPolicy, allow

KEY = "sk-bounds"
MIB = 1024 * 1024
CHAT = {"model": "tuned", "messages": [{"role": "user", "content": "capital of France?"}]}


class CountingEngine(ScriptedEngine):
    """The scripted engine, counting tokenizer calls."""

    def __init__(self):
        super().__init__()
        self.encoded = 0

    def encode(self, model, *, messages=None, text=None):
        self.encoded += 1
        return super().encode(model, messages=messages, text=text)


def make_client(engine=None, **kw):
    from fastapi.testclient import TestClient

    from tuneloop.serving.server import create_app

    return TestClient(create_app(engine or ScriptedEngine(), **kw), raise_server_exceptions=False)


def error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# ---- the body cap: a pure ASGI middleware ------------------------------------------------------
def _run_body_limit(messages: list[dict], headers: list[tuple[bytes, bytes]], max_bytes: int):
    reads, sent, seen = [], [], []

    async def app(scope, receive, send):
        while True:
            m = await receive()
            seen.append(m)
            if not m.get("more_body"):
                break

    async def receive():
        reads.append(1)
        return messages[len(reads) - 1] if len(reads) <= len(messages) else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    asyncio.run(BodyLimit(app, max_bytes)({"type": "http", "method": "POST", "headers": headers}, receive, send))
    return reads, sent, seen


def test_a_declared_length_over_the_cap_is_refused_before_reading_a_byte():
    reads, sent, seen = _run_body_limit([], [(b"content-length", str(50 * MIB).encode())], 8 * MIB)
    assert reads == [] and seen == []
    assert sent[0]["status"] == 413
    err = json.loads(sent[1]["body"])["error"]
    assert err["code"] == "request_too_large" and err["param"] == "body" and "--max-request-bytes" in err["message"]


def test_a_chunked_body_is_counted_and_reading_stops_at_the_cap():
    chunk = {"type": "http.request", "body": b"x" * 1000, "more_body": True}
    reads, sent, seen = _run_body_limit([chunk] * 50, [], max_bytes=4096)
    assert len(reads) == 5 and seen == [] and sent[0]["status"] == 413  # 5000 bytes read of 50000
    last = {"type": "http.request", "body": b"x" * 1000, "more_body": False}
    reads, sent, seen = _run_body_limit([chunk, chunk, last], [], max_bytes=4096)
    assert sent == [] and b"".join(m["body"] for m in seen) == b"x" * 3000  # within the cap: replayed as sent


def test_the_cap_answers_413_in_openai_shape_and_smaller_bodies_pass():
    engine = CountingEngine()
    with make_client(engine, limits=Limits(max_request_bytes=2048)) as c:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}
        err = error(c.post("/v1/chat/completions", json=big), 413)
        assert err["type"] == "invalid_request_error" and "at most 2048 bytes" in err["message"]
        assert engine.encoded == 0
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200


# ---- prompt length and the token budget, before the tokenizer --------------------------------
def test_a_prompt_too_long_for_the_context_is_refused_untokenized():
    engine = CountingEngine()  # context 4096
    too_long = 4096 * CHARS_PER_TOKEN_BOUND + 1
    with make_client(engine) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "messages": [
            {"role": "system", "content": "x" * (too_long - 10)}, {"role": "user", "content": [
                {"type": "text", "text": "y" * 10}]}]})
        err = error(r, 400)
        assert err["param"] == "messages" and "context is 4096 tokens" in err["message"]
        err = error(c.post("/v1/completions", json={"model": "base", "prompt": ["ok", "z" * too_long]}), 400)
        assert err["param"] == "prompt"
        assert engine.encoded == 0


def test_prompts_times_n_times_max_tokens_is_bounded_and_names_the_param():
    with make_client() as c:  # default budget: 64 x the context (4096)
        err = error(c.post("/v1/completions", json={"model": "base", "prompt": ["a"] * 5, "n": 16,
                                                    "max_tokens": 4000}), 400)
        assert err["param"] == "n" and "5 prompt(s) x n=16 x max_tokens=4000 = 320000 tokens" in err["message"]
        assert "at most 262144 tokens" in err["message"]
    with make_client(limits=Limits(max_request_tokens=100)) as c:
        err = error(c.post("/v1/completions", json={"model": "base", "prompt": ["a"] * 4, "max_tokens": 30}), 400)
        assert err["param"] == "prompt"
        err = error(c.post("/v1/chat/completions", json={**CHAT, "n": 4, "max_completion_tokens": 30}), 400)
        assert err["param"] == "n" and "max_completion_tokens=30" in err["message"]
        assert c.post("/v1/chat/completions", json={**CHAT, "n": 3, "max_tokens": 30}).status_code == 200


# ---- every field -----------------------------------------------------------------------------
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body, param", [
    ({**CHAT, "max_completion_tokens": 0}, "max_completion_tokens"),
    ({**CHAT, "max_completion_tokens": "many"}, "max_completion_tokens"),
    ({**CHAT, "max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens"),
    ({**CHAT, "max_tokens": 10**30}, "max_tokens"),
    ({**CHAT, "max_completion_tokens": 5000}, "max_completion_tokens"),    # over the context
    ({**CHAT, "seed": 2**63}, "seed"),
    ({**CHAT, "seed": -(2**63) - 1}, "seed"),
    ({**CHAT, "seed": 1.5}, "seed"),
    ({**CHAT, "n": 17}, "n"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "temperature": 2.5}, "temperature"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "top_p": 0}, "top_p"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**CHAT, "stop": "x" * 257}, "stop"),
    ({**CHAT, "stop": [""]}, "stop"),
    ({**CHAT, "stop": [1]}, "stop"),
    ({**CHAT, "logprobs": True}, "logprobs"),
    ({**CHAT, "top_logprobs": 3}, "top_logprobs"),
    ({**CHAT, "stream": "maybe"}, "stream"),
    ({**CHAT, "messages": []}, "messages"),
    ({**CHAT, "messages": "hi"}, "messages"),
    ({**CHAT, "messages": MSG * 1025}, "messages"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 257}]}, "messages[0].content"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({**CHAT, "messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfffb"}]}]},
     "messages[0].content[0].text"),
    ({**CHAT, "model": "\udc00"}, "model"),
    ({**CHAT, "stop": ["ok", "\ud83d"]}, "stop[1]"),
    ({**CHAT, "user": {"\ud800": 1}}, "user"),
    ({**CHAT, "model": "m" * 5000}, "model"),
    ({"messages": MSG}, "model"),
])
def test_every_chat_field_is_validated_with_400_naming_it(body, param):
    with make_client() as c:
        err = error(c.post("/v1/chat/completions", content=json.dumps(body).encode(),
                           headers={"content-type": "application/json"}), 400)
    assert err["param"] == param, err
    if "surrogate" in err["message"]:
        assert "not valid Unicode" in err["message"]


@pytest.mark.parametrize("body, param", [
    ({"model": "base", "prompt": []}, "prompt"),
    ({"model": "base", "prompt": ["a"] * 65}, "prompt"),
    ({"model": "base", "prompt": ""}, "prompt"),
    ({"model": "base", "prompt": 7}, "prompt"),
    ({"model": "base", "prompt": "x", "echo": True}, "echo"),
    ({"model": "base", "prompt": "x", "best_of": 3}, "best_of"),
])
def test_every_completion_field_is_validated(body, param):
    with make_client() as c:
        assert error(c.post("/v1/completions", json=body), 400)["param"] == param


@pytest.mark.parametrize("raw, why", [
    (b"[1, 2]", "must be a JSON object, not an array"),
    (b"null", "must be a JSON object, not null"),
    (b'"text"', "must be a JSON object, not a string"),
    (b"17", "must be a JSON object, not a number"),
    (b"{not json", "not valid JSON"),
    (b'{"model": "\xff"}', "cannot be parsed as JSON: it is not UTF-8"),
    (b"[" * 5000 + b"]" * 5000, "cannot be parsed as JSON: it is nested too deeply"),
    (b'{"model": "base", "prompt": "x", "temperature": NaN}', "finite number"),
    (b'{"model": "base", "prompt": "x", "top_p": Infinity}', "finite number"),
])
def test_bodies_that_are_not_a_json_object_get_400(raw, why):
    with make_client() as c:
        for route in ("/v1/completions", "/v1/load_lora_adapter"):
            err = error(c.post(route, content=raw, headers={"content-type": "application/json"}), 400)
            if route == "/v1/completions":
                assert why in err["message"], err


def test_a_tiny_temperature_samples_instead_of_failing():
    """1e-300 is a valid temperature; softmax(logits / 1e-300) was NaN and the request a 500."""
    torch = pytest.importorskip("torch")
    from tuneloop.serving.batching import Scheduler

    class Row:
        def __init__(self, t):
            self.req = SimpleNamespace(params=SimpleNamespace(temperature=t, top_p=1.0))
            self.generator = torch.Generator().manual_seed(0)

    logits = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    assert Scheduler._sample(logits, [Row(1e-300), Row(5e-324)]).tolist() == [1, 1]


# ---- lora_path / model_path: under the model roots ------------------------------------------
@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNELOOP_MODEL_ROOTS", raising=False)
    monkeypatch.delenv("TUNELOOP_ALLOW_REMOTE_WEIGHTS", raising=False)
    monkeypatch.delenv("TUNELOOP_ALLOW_URLS", raising=False)
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "adapter").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    return SimpleNamespace(root=root, outside=outside, policy=WeightPolicy(roots=(root.resolve(),)))


def test_local_paths_resolve_and_must_stay_under_a_root(roots):
    p = roots.policy
    assert p.check(str(roots.root / "adapter"), "lora_path") == str((roots.root / "adapter").resolve())
    assert p.check(str(roots.root / "adapter" / ".." / "adapter"), "lora_path").endswith("adapter")
    for bad in (str(roots.outside), str(roots.root / ".." / "outside"), str(roots.root / "escape"),
                str(roots.root / "escape" / "x"), "/etc", "relative/path"):
        with pytest.raises(ValidationError) as e:
            p.check(bad, "lora_path")
        assert e.value.param == "lora_path" and e.value.code == "weights_location_not_allowed"
        assert "--model-root DIR" in e.value.hint
    with pytest.raises(ValidationError, match="NUL"):
        p.check(str(roots.root) + "/a\x00b", "model_path")


def test_roots_come_from_settings_flags_and_the_environment(roots, tmp_path, monkeypatch):
    from tuneloop.settings import Settings

    settings = Settings(home=tmp_path / "home", database_url="sqlite://", models_dir=tmp_path / "models")
    extra = tmp_path / "extra"
    monkeypatch.setenv("TUNELOOP_MODEL_ROOTS", os.pathsep.join([str(roots.outside), str(extra)]))
    policy = WeightPolicy.configured(settings, roots=[str(roots.root)])
    assert set(policy.roots) == {(tmp_path / p).resolve() for p in ("home", "models", "root", "outside", "extra")}
    assert not policy.allow_remote
    monkeypatch.setenv("TUNELOOP_ALLOW_REMOTE_WEIGHTS", "1")
    assert WeightPolicy.configured(settings).allow_remote


def test_the_operators_allow_list_admits_the_folders_it_names(roots, tmp_path):
    file = tmp_path / "home" / "allowed-weights.json"
    policy = WeightPolicy(roots=roots.policy.roots, allow_file=file)
    with pytest.raises(ValidationError):
        policy.check(str(roots.outside), "lora_path")
    allow(file, roots.outside)
    allow(file, roots.outside)
    assert json.loads(file.read_text()) == [str(roots.outside.resolve())]
    assert policy.check(str(roots.outside / "sub"), "lora_path") == str((roots.outside / "sub").resolve())


@pytest.fixture
def stub_dns(monkeypatch):
    names = {"weights.example.test": ["93.184.216.34"], "metadata.evil.test": ["169.254.169.254"],
             "internal.evil.test": ["10.1.2.3"]}
    asked = []

    def resolve(host, port):
        asked.append(host)
        if host not in names:
            raise socket.gaierror(f"stub resolver: unknown name {host}")
        return names[host]

    monkeypatch.setattr(netguard, "resolver", resolve)
    return asked


@pytest.mark.parametrize("url", ["http://weights.example.test/a.tar.gz", "https://169.254.169.254/x",
                                 "s3://bucket/adapter", "hf://acme/adapter", "file:///etc", "gs://b/x",
                                 "zip://a.safetensors::file:///tmp/x.zip"])
def test_urls_are_refused_unless_remote_weights_are_allowed(roots, stub_dns, url):
    with pytest.raises(ValidationError) as e:
        roots.policy.check(url, "lora_path")
    assert "--allow-remote-weights" in e.value.hint and "TUNELOOP_ALLOW_REMOTE_WEIGHTS=1" in e.value.hint
    assert stub_dns == []  # nothing resolved


def test_allowed_urls_still_pass_the_url_guard(roots, stub_dns, monkeypatch):
    policy = WeightPolicy(roots=roots.policy.roots, allow_remote=True)
    assert policy.check("https://weights.example.test/a.tar.gz", "lora_path") == "https://weights.example.test/a.tar.gz"
    assert policy.check("s3://bucket/adapter", "model_path") == "s3://bucket/adapter"
    for url, why in [("http://metadata.evil.test/latest/", "link-local"), ("http://169.254.169.254/", "link-local"),
                     ("http://internal.evil.test/a", "private-network"), ("https://127.0.0.1:8000/x", "loopback")]:
        with pytest.raises(netguard.UnsafeURLError, match=why):
            policy.check(url, "lora_path")
    monkeypatch.setenv("TUNELOOP_ALLOW_URLS", "private")
    assert policy.check("http://internal.evil.test/a", "lora_path")
    for url in ("file:///etc/passwd", "memory://x", "zip://a::s3://b/c.zip"):
        with pytest.raises(ValidationError, match="not fetched"):
            policy.check(url, "lora_path")


def test_the_admin_routes_refuse_paths_outside_the_roots(roots):
    with make_client(weights=roots.policy) as c:
        for route, field, extra in [("/v1/load_lora_adapter", "lora_path", {"lora_name": "x"}),
                                    ("/v1/load_inference_component", "model_path", {"name": "x"}),
                                    ("/v1/replace_base_model", "model_path", {"name": "x"})]:
            for path in (str(roots.outside), str(roots.root / "escape"), "https://169.254.169.254/x"):
                err = error(c.post(route, json={**extra, field: path}), 400)
                assert err["param"] == field and err["code"] == "weights_location_not_allowed", err
            err = error(c.post(route, json={**extra, field: str(roots.root / "adapter")}), 400)
            assert err["code"] == "invalid_adapter"  # under the root: checked as weights, not refused as a place


# ---- a real `tuneloop serve`: 50 MB stays out of memory; the CLI's own paths load ------------
@pytest.fixture(scope="module")
def served(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"TUNELOOP_HOME": str(root / "home"), "TUNELOOP_MODELS_DIR": str(models_dir), "TUNELOOP_API_KEY": KEY,
           "TUNELOOP_MODEL_ROOTS": "", "TUNELOOP_ALLOW_REMOTE_WEIGHTS": ""}
    log = open(root / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--batch-window-ms", "0"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, (root / "serve.log").read_text()
        assert time.monotonic() < deadline, (root / "serve.log").read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield SimpleNamespace(url=url, proc=proc, env=env, root=root, headers={"Authorization": f"Bearer {KEY}"})
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_50_mb_message_gets_413_and_the_server_memory_stays_flat(served):
    psutil = pytest.importorskip("psutil")
    server = psutil.Process(served.proc.pid)
    chat = {"model": "tuneloop/tiny-qwen3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=120) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200   # warm: the baseline serves
        before = server.memory_info().rss
        big = json.dumps({**chat, "messages": [{"role": "user", "content": "x" * (50 * MIB)}]}).encode()
        err = error(client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"}), 413)
        assert err["code"] == "request_too_large" and "8388608 bytes" in err["message"]

        def chunks():  # the same 50 MB without a Content-Length (chunked transfer encoding)
            for i in range(0, len(big), MIB):
                yield big[i:i + MIB]

        err = error(client.post("/v1/chat/completions", content=chunks(),
                                headers={"content-type": "application/json"}), 413)
        assert "more than 8388608 bytes" in err["message"]
        after = server.memory_info().rss
        print(f"\nserver RSS before {before / MIB:.0f} MiB, after two 50 MB requests {after / MIB:.0f} MiB")
        assert after - before < 200 * MIB, (before, after)
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
    assert httpx.get(served.url + "/health", timeout=10).json()["status"] == "ok"


def test_http_paths_must_be_under_the_roots_but_the_operators_cli_loads_any_folder(served, tmp_path):
    adapter = make_adapter(tmp_path / "outside-adapter")  # shapes of tuneloop/tiny-qwen3
    home = Path(served.env["TUNELOOP_HOME"])
    (home / "link-out").symlink_to(adapter)
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as client:
        for path in (str(adapter), str(home / "link-out"), f"{home}/{os.path.relpath(adapter, home)}",
                     "http://169.254.169.254/latest/meta-data/", "s3://bucket/adapter"):
            err = error(client.post("/v1/load_lora_adapter", json={"lora_name": "outside", "lora_path": path}), 400)
            assert err["param"] == "lora_path" and err["code"] == "weights_location_not_allowed", err
        r = cli("adapter", "add", "outside", "--weights", str(adapter), env=served.env)
        assert r.returncode == 0 and "loaded into the running server" in r.stdout, r.stderr
        assert "outside" in {m["id"] for m in client.get("/v1/models").json()["data"]}
        r = client.post("/v1/chat/completions", json={"model": "outside", "max_tokens": 2,
                                                      "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
