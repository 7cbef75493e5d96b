"""The deploy loop as a user runs it: two real tune jobs, `tuneloop serve` in a subprocess on a
free port, the official `openai` client against it, and the adapter / add-ic / deploy / test
commands changing what it serves while it runs and across a restart.

The tests share one server and run in file order (each builds on what the previous one deployed).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

openai = pytest.importorskip("openai")

from tests.conftest import DEMO_DATA, REPO, cli, write_jsonl  # noqa: E402

pytestmark = pytest.mark.slow

KEY = "sk-tuneloop-e2e"
BASE = "tuneloop/tiny-qwen3"
CAPITALS = [json.loads(line) for line in (DEMO_DATA / "sft.jsonl").read_text().splitlines()]
GREETINGS = [{"prompt": r["prompt"], "completion": g} for r, g in zip(CAPITALS, [
    "Bonjour, Paris!", "Konnichiwa, Tokyo!", "Ciao, Rome!", "Salaam, Cairo!", "Hello, Ottawa!", "Jambo, Nairobi!"])]


def _train(dataset: Path) -> dict:
    from tuneloop.service.jobs import JobService, TuneRequest
    from tuneloop.service.runner import run_job
    from tuneloop.settings import load_settings
    from tuneloop.store import open_store

    settings = load_settings()
    svc = JobService(open_store(settings.database_url), settings)
    job = svc.submit(svc.prepare(TuneRequest(technique="sft", dataset=str(dataset))), launch=False, force=True).job
    assert run_job(svc.store, job["id"]) == "completed", svc.get(job["id"])["error"]
    return svc.get(job["id"])


def _merge(base: Path, adapter: str, out: Path) -> Path:
    """A full model with the adapter merged in: what a full-rank output looks like to serving."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loop(models_dir, tmp_path_factory):
    """Two trained adapters (capitals; greetings on the same prompts), a merged full model."""
    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNELOOP_HOME", str(root / "home"))
        mp.setenv("TUNELOOP_MODELS_DIR", str(models_dir))
        from tuneloop.models.builtin import ensure_builtin

        capitals = _train(DEMO_DATA / "sft.jsonl")
        greetings = _train(write_jsonl(root / "alt-answers.jsonl", GREETINGS))
        base = ensure_builtin(BASE, models_dir)
        merged = _merge(base, capitals["output_path"], root / "merged")
        yield SimpleNamespace(root=root, home=root / "home", base=base, capitals=capitals, greetings=greetings,
                              merged=merged, port=_free_port(), env={"TUNELOOP_HOME": str(root / "home"),
                                                                     "TUNELOOP_API_KEY": KEY})


class Server:
    def __init__(self, loop):
        self.loop, self.proc = loop, None
        self.url = f"http://127.0.0.1:{loop.port}"

    def start(self) -> None:
        log = open(self.loop.root / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneloop", "serve", "--port", str(self.loop.port), "--api-key", KEY,
             "--batch-window-ms", "50", "--model-root", str(self.loop.root)],  # the bad folders posted directly stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, **self.loop.env})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.loop.root / "serve.log").read_text()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("server did not start:\n" + (self.loop.root / "serve.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def client(self, key: str = KEY, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120, **kw)


@pytest.fixture(scope="module")
def server(loop):
    # recorded before any server runs: the server loads it when it starts
    r = cli("adapter", "add", "capitals", "--from-tune", "sft-sft", env=loop.env)
    assert r.returncode == 0, r.stderr
    assert "recorded; `tuneloop serve` will serve it" in r.stdout and loop.capitals["id"] in r.stdout
    srv = Server(loop)
    srv.start()
    yield srv
    srv.stop()


def _chat(client, model: str, prompt: str, **kw) -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       temperature=0, max_tokens=16, **kw)
    return r.choices[0].message.content


async def _chat_all(srv: Server, pairs: list[tuple[str, str]]) -> list[str]:
    async with openai.AsyncOpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as client:
        async def one(model, prompt):
            r = await client.chat.completions.create(model=model, temperature=0, max_tokens=16,
                                                     messages=[{"role": "user", "content": prompt}])
            return r.choices[0].message.content
        return await asyncio.gather(*(one(m, p) for m, p in pairs))


def test_models_lists_the_base_and_the_restored_adapter(server):
    models = {m.id: m.to_dict() for m in server.client().models.list()}
    assert set(models) == {BASE, "capitals"}
    assert models["capitals"]["parent"] == BASE and models[BASE]["parent"] is None


def test_the_tuned_adapter_answers_its_trained_prompts_and_the_base_does_not(server):
    prompts = [r["prompt"] for r in CAPITALS]
    answers = asyncio.run(_chat_all(server, [("capitals", p) for p in prompts] + [(BASE, p) for p in prompts]))
    tuned, base = answers[:len(prompts)], answers[len(prompts):]
    assert tuned == [r["completion"] for r in CAPITALS]
    assert not any(b.strip() == r["completion"] for b, r in zip(base, CAPITALS))
    r = server.client().chat.completions.create(model="capitals", temperature=0,
                                                messages=[{"role": "user", "content": prompts[0]}])
    assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens == r.usage.total_tokens - r.usage.prompt_tokens
    assert r.choices[0].finish_reason == "stop"


def test_streaming_gives_the_same_answer_in_chunks(server):
    client = server.client()
    prompt = "How many legs does a spider have?"
    stream = client.chat.completions.create(model="capitals", messages=[{"role": "user", "content": prompt}],
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Eight." == _chat(client, "capitals", prompt)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens >= 2


def test_an_adapter_added_while_serving_answers_at_once(server, loop):
    r = cli("adapter", "add", "greetings", "--from-tune", "sft-alt-answers", env=loop.env)
    assert r.returncode == 0, r.stderr
    assert "loaded into the running server" in r.stdout and loop.greetings["id"] in r.stdout
    models = {m.id: m.to_dict() for m in server.client().models.list()}
    assert models["greetings"]["parent"] == BASE
    answers = asyncio.run(_chat_all(server, [("greetings", g["prompt"]) for g in GREETINGS]))
    assert answers == [g["completion"] for g in GREETINGS]


def test_base_and_two_adapters_answer_differently_in_one_batch(server):
    mixed = ["__base__", "capitals", "greetings"]

    def together() -> int:
        return sum(s["forwards"] for s in server.health()["batching"]["adapter_sets"] if s["adapters"] == mixed)

    before = together()
    prompt = CAPITALS[0]["prompt"]
    base, capitals, greetings = asyncio.run(_chat_all(server, [(BASE, prompt), ("capitals", prompt),
                                                               ("greetings", prompt)]))
    assert (capitals, greetings) == ("Paris.", "Bonjour, Paris!") and base.strip() not in (capitals, greetings)
    assert together() > before, server.health()["batching"]  # one forward carried all three


def test_text_completions_and_sampling_parameters(server):
    client = server.client()
    r = client.completions.create(model=BASE, prompt="The capital of", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens <= 5
    assert (r.choices[0].finish_reason == "length") == (r.usage.completion_tokens == 5)
    r = client.chat.completions.create(model="capitals", temperature=0, max_tokens=1,
                                       messages=[{"role": "user", "content": CAPITALS[4]["prompt"]}])
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 1
    assert "Ottawa.".startswith(r.choices[0].message.content)
    kw = dict(model="capitals", prompt="Tell me", max_tokens=8, temperature=1.0, top_p=0.95, seed=11, n=2)
    first, again = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in first.choices] == [c.text for c in again.choices] and len(first.choices) == 2
    r = client.chat.completions.create(model="capitals", temperature=0, stop=["."],
                                       messages=[{"role": "user", "content": CAPITALS[1]["prompt"]}])
    assert r.choices[0].message.content == "Tokyo" and r.choices[0].finish_reason == "stop"


def test_bad_requests_get_openai_error_bodies(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError) as e:
        _chat(client, "no-such-model", "hi")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    assert set(e.value.body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="capitals", messages=[{"role": "user"}])
    assert e.value.body["param"] == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as e:
        _chat(client, "capitals", "hi", top_p=1.5)
    assert e.value.body["param"] == "top_p" and "top_p" in e.value.body["message"]
    with pytest.raises(openai.AuthenticationError) as e:
        server.client(key="sk-wrong").models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"


def test_bad_adapter_folders_are_refused_with_a_clear_message(server, loop):
    import torch
    from safetensors.torch import load_file

    from tests.unit.test_serving_adapters import make_adapter

    out = Path(loop.capitals["output_path"])
    no_config = loop.root / "bad-no-config"
    shutil.copytree(out, no_config)
    (no_config / "adapter_config.json").unlink()
    pickled = loop.root / "bad-pickle"
    shutil.copytree(out, pickled)
    torch.save(load_file(str(pickled / "adapter_model.safetensors")), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    other_base = make_adapter(loop.root / "bad-other-base", base="tuneloop/small-qwen3", scale=4)
    cases = [(no_config, "has no adapter_config.json: it is not a PEFT adapter folder"),
             (pickled, "holds only pickle weights (adapter_model.bin): tuneloop loads safetensors only"),
             (other_base, f"does not fit the base {BASE} (it was trained on tuneloop/small-qwen3)"),
             (loop.merged, "is a full model (config.json, no adapter_config.json), not a LoRA adapter")]
    for folder, message in cases:
        r = cli("adapter", "add", "bad", "--weights", str(folder), env=loop.env)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        with pytest.raises(openai.BadRequestError) as e:  # the server's own check (vLLM's load API)
            server.client().post("/load_lora_adapter", cast_to=str, body={"lora_name": "bad", "lora_path": str(folder)})
        assert message in e.value.body["message"]
    assert "tuneloop add-ic NAME --model-data" in r.stderr
    assert {m.id for m in server.client().models.list()} == {BASE, "capitals", "greetings"}


def test_add_ic_serves_a_full_model_as_its_own_model(server, loop):
    r = cli("add-ic", "merged", "--model-data", str(loop.merged), env=loop.env)
    assert r.returncode == 0 and "Inference component merged added" in r.stdout, r.stderr
    models = {m.id: m.to_dict() for m in server.client().models.list()}
    assert models["merged"]["kind"] == "ic" and models["merged"]["parent"] is None
    assert _chat(server.client(), "merged", CAPITALS[2]["prompt"]) == "Rome."


def test_tuneloop_test_prints_answers_beside_the_base(server, loop):
    r = cli("test", "--model", "capitals", "--prompt", "What is the capital of Peru?", env=loop.env)
    assert r.returncode == 0, r.stderr
    assert "Lima." in r.stdout and BASE in r.stdout and "capitals" in r.stdout
    r = cli("test", "--model", "greetings", "--dataset", str(DEMO_DATA / "sft.jsonl"), "--samples", "3", "--json",
            env=loop.env)
    rows = json.loads(r.stdout)
    assert [row["greetings"] for row in rows] == [g["completion"] for g in GREETINGS[:3]]
    assert [row["expected"] for row in rows] == [c["completion"] for c in CAPITALS[:3]] and BASE in rows[0]


def test_a_restarted_server_serves_the_same_set(server, loop):
    server.stop()
    state = json.loads(cli("deployment", "--json", env=loop.env).stdout)
    assert state["server"] is None
    assert [a["name"] for a in state["adapters"]] == ["capitals", "greetings"]
    assert state["adapters"][0]["job_id"] == loop.capitals["id"] and state["adapters"][0]["version"] == 1
    server.start()
    assert {m.id for m in server.client().models.list()} == {BASE, "capitals", "greetings", "merged"}
    assert _chat(server.client(), "greetings", GREETINGS[3]["prompt"]) == "Salaam, Cairo!"


def test_deploy_force_ic_replaces_the_base_and_adapter_remove_unloads(server, loop):
    r = cli("deploy", "--model-data", str(loop.merged), env=loop.env)
    assert r.returncode == 1 and "--force-ic" in r.stderr
    r = cli("deploy", "--model-data", str(loop.merged), "--force-ic", env=loop.env)
    assert r.returncode == 0 and "loaded into the running server" in r.stdout, r.stderr
    models = {m.id: m.to_dict() for m in server.client().models.list()}
    new_base = str(loop.merged.resolve())
    assert models[new_base]["kind"] == "base" and models["capitals"]["parent"] == new_base
    assert _chat(server.client(), new_base, CAPITALS[3]["prompt"]) == "Cairo."  # the merged SFT weights
    r = cli("adapter", "remove", "greetings", env=loop.env)
    assert r.returncode == 0 and "unloaded from the running server" in r.stdout, r.stderr
    assert "greetings" not in {m.id for m in server.client().models.list()}
    with pytest.raises(openai.NotFoundError):
        _chat(server.client(), "greetings", "hi")
