"""The OpenAI surface without a model: request validation, error bodies, SSE framing, stop-string
streaming, API keys, and the vLLM command line (a scripted engine stands in for the model)."""

from __future__ import annotations

import json

import pytest

from tuneloop.errors import ModelNotFoundError, ValidationError
from tuneloop.serving import protocol as P
from tuneloop.serving.engine import GeneratingEngine, SamplingParams, Ticket, choose_engine
from tuneloop.serving.text import find_stop, visible_text
from tuneloop.serving.vllm_engine import BaseModel, VLLMEngine, rank_bucket, vllm_command, vllm_env


# ---- streaming text --------------------------------------------------------------------------
def test_visible_text_holds_back_a_possible_stop_and_half_characters():
    assert visible_text("Hello wor", ["world"], finished=False) == len("Hello ")
    assert visible_text("Hello wor", ["xyz"], finished=False) == len("Hello wor")
    assert visible_text("caf\ufffd", [], finished=False) == 3
    assert visible_text("Hello wor", ["world"], finished=True) == len("Hello wor")


def test_find_stop_finds_the_earliest():
    assert find_stop("a. b\n c", ["\n", "."]) == 1
    assert find_stop("abc", ["x"]) == -1
    assert find_stop("a.b.", ["."], start=2) == 3


# ---- request validation ----------------------------------------------------------------------
def test_validation_param_names_the_field():
    assert P.validation_param(("body", "messages", 0, "content")) == "messages[0].content"
    assert P.validation_param(("body", "messages", 0, "content", "str")) == "messages[0].content"
    assert P.validation_param(("body", "temperature")) == "temperature"
    assert P.validation_param(("body",)) == "body"


def test_sampling_defaults_and_limits():
    req = P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], stop="\n", seed=3)
    params = req.sampling(prompt_tokens=10, context=100, default_max=256)
    assert params == SamplingParams(temperature=1.0, top_p=1.0, max_tokens=90, stop=["\n"], seed=3, n=1)
    req = P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=95)
    with pytest.raises(ValidationError, match="maximum context length is 100 tokens") as e:
        req.sampling(prompt_tokens=10, context=100, default_max=256)
    assert e.value.param == "max_tokens"
    extra = P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=5)
    assert extra.sampling(1, 100, 256).max_tokens == 5


def test_unsupported_fields_are_refused_by_name():
    req = P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function"}])
    with pytest.raises(ValidationError) as e:
        req.check_unsupported()
    assert e.value.param == "tools"
    P.ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], user="u").check_unsupported()
    with pytest.raises(ValidationError, match="up to 4"):
        P.CompletionRequest(model="m", prompt="x", stop=["a", "b", "c", "d", "e"]).check_unsupported()


def test_content_parts_and_developer_role_become_a_plain_chat():
    req = P.ChatCompletionRequest(model="m", messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert req.chat() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


def test_error_response_maps_typed_errors_once():
    status, body = P.error_response(ModelNotFoundError("x", ["base", "tuned"]))
    assert status == 404
    assert body == {"error": {"message": "The model `x` does not exist. Served models: base, tuned.",
                              "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    status, body = P.error_response(RuntimeError("boom"))
    assert status == 500 and body["error"]["type"] == "server_error"


# ---- engines ---------------------------------------------------------------------------------
def test_vllm_command_and_environment():
    base = BaseModel("tuneloop/tiny-qwen3", "/models/tiny")
    cmd = vllm_command(base, host="0.0.0.0", port=8001, adapters={"tuned": "/a"}, max_lora_rank=40)
    assert cmd[:3] == ["vllm", "serve", "/models/tiny"]
    assert cmd[cmd.index("--served-model-name") + 1] == "tuneloop/tiny-qwen3"
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "64"
    assert json.loads(cmd[cmd.index("--lora-modules") + 1]) == {"name": "tuned", "path": "/a",
                                                                 "base_model_name": "tuneloop/tiny-qwen3"}
    env = vllm_env("sk-1", {})
    assert env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_API_KEY": "sk-1"}
    assert "sk-1" not in " ".join(cmd)
    assert rank_bucket(8) == 8 and rank_bucket(65) == 128
    with pytest.raises(ValidationError, match="above what vLLM serves"):
        rank_bucket(1024)


def test_vllm_engine_starts_the_command_and_refuses_inference_components():
    started = {}

    class FakeProc:
        pid = 4242

        def poll(self):
            return None

    def popen(cmd, env):
        started.update(cmd=cmd, env=env)
        return FakeProc()

    engine = VLLMEngine(BaseModel("b", "/b"), host="127.0.0.1", port=9, adapters={"x": "/x"}, popen=popen)
    assert engine.start() == 4242 and started["cmd"][:2] == ["vllm", "serve"]
    assert started["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert [m["id"] for m in engine.models()] == ["b", "x"]
    with pytest.raises(ValidationError, match="one model per server"):
        engine.add_model("ic", "/ic")


def test_choose_engine_without_vllm_installed():
    assert choose_engine("auto") == "transformers"
    with pytest.raises(ValidationError, match="needs the vllm package") as e:
        choose_engine("vllm")
    assert "--engine transformers" in e.value.hint
    with pytest.raises(ValidationError, match='Unknown engine "tgi"'):
        choose_engine("tgi")


# ---- the HTTP layer with a scripted engine ----------------------------------------------------
class ScriptedEngine(GeneratingEngine):
    """Answers every prompt with `reply`, one character per token, honouring n / max_tokens / stop."""

    kind = "scripted"

    def __init__(self, reply: str = "Paris. And more."):
        self.reply = reply
        self.base = BaseModel("base", "/nowhere")

    def models(self):
        return [{"id": "base", "kind": "base", "parent": None, "root": "/nowhere"},
                {"id": "tuned", "kind": "adapter", "parent": "base", "root": "/a"}]

    def _check(self, model):
        if model not in ("base", "tuned"):
            raise ModelNotFoundError(model, ["base", "tuned"])

    def encode(self, model, *, messages=None, text=None):
        self._check(model)
        return list(range(len(json.dumps(messages) if messages is not None else text)))

    def context_length(self, model):
        return 4096

    def submit(self, model, prompts, params, sink):
        for choice in range(len(prompts) * params.n):
            text = self.reply[: params.max_tokens]
            at = find_stop(text, params.stop)
            reason = "stop" if at >= 0 or len(text) == len(self.reply) else "length"
            text = text[:at] if at >= 0 else text
            for ch in text:
                sink("text", choice, ch)
            sink("finish", choice, (reason, len(text)))
        return Ticket()

    def load_adapter(self, name, path): ...
    def unload_adapter(self, name): ...
    def add_model(self, name, path): ...
    def remove_model(self, name): ...
    def replace_base(self, base): return []


@pytest.fixture
def client():
    from fastapi.testclient import TestClient

    from tuneloop.serving.server import create_app

    app = create_app(ScriptedEngine(), api_key="sk-good", info={"project": "p"})
    with TestClient(app, headers={"Authorization": "Bearer sk-good"}) as c:
        yield c


CHAT = {"model": "tuned", "messages": [{"role": "user", "content": "capital of France?"}]}


def test_chat_completion_body_and_usage(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "stop": [" And"], "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tuned"
    assert [c["message"]["content"] for c in body["choices"]] == ["Paris.", "Paris."]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 12 and body["usage"]["total_tokens"] == \
        body["usage"]["prompt_tokens"] + 12


def test_chat_stream_is_sse_with_role_deltas_finish_usage_and_done(client):
    with client.stream("POST", "/v1/chat/completions",
                       json={**CHAT, "stream": True, "max_tokens": 4, "stream_options": {"include_usage": True}}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Pari"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def test_text_completions(client):
    r = client.post("/v1/completions", json={"model": "base", "prompt": ["a", "b"], "max_tokens": 3})
    body = r.json()
    assert body["object"] == "text_completion" and [c["text"] for c in body["choices"]] == ["Par", "Par"]
    assert [c["index"] for c in body["choices"]] == [0, 1]


def test_models_health_and_errors(client):
    ids = [(m["id"], m["parent"]) for m in client.get("/v1/models").json()["data"]]
    assert ids == [("base", None), ("tuned", "base")]
    assert client.get("/v1/models/tuned").json()["parent"] == "base"
    health = client.get("/health", headers={"Authorization": ""}).json()
    assert health["status"] == "ok" and health["project"] == "p"
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/chat/completions", json={"model": "tuned", "messages": [{"role": "user"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    r = client.post("/v1/chat/completions", json={**CHAT, "n": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
