"""The OpenAI fine-tuning API end to end, driven only by the official `openai` client against live
`tuneloop serve` processes on the built-in model: upload -> create (supervised, dpo, reinforcement
with a string_check grader) -> poll -> events -> checkpoints -> chat with the `ft:` model, whose
answers changed as trained; the API server restarted mid-job loses nothing; list paging, cancel,
idempotency keys under 200 concurrent creations, another key sees none of the first key's objects,
and bad input is an OpenAI error body naming its param with nothing half-created. Every response
is validated against the client's own pydantic types (strict `model_validate` of the raw JSON).

The training server runs `--workers 1`; the queue-only one (`--workers 0`, a 1 MiB upload limit)
holds the jobs that must not train."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")
from openai.types import FileObject  # noqa: E402
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent  # noqa: E402
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint  # noqa: E402

from tests.conftest import REPO, cli  # noqa: E402

pytestmark = pytest.mark.slow
BASE = "tuneloop/tiny-qwen3"
DEMO = REPO / "src" / "tuneloop" / "demo_data"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tuneloop serve` in its own process, restartable on the same home and port."""

    def __init__(self, home: Path, env: dict, workers: int):
        self.home, self.env, self.workers = home, env, workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--port", str(self.port), "--model",
                                      BASE, "--workers", str(self.workers)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=self.env)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, (self.home / "serve.log").read_text()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (self.home / "serve.log").read_text()
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, key: str):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)


def _key(env: dict, project: str) -> str:
    r = cli("keys", "create", "--project", project, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["key"]


def _server(tmp_path_factory, models_dir, name: str, workers: int, **env_extra: str):
    home = tmp_path_factory.mktemp(name)
    env = {**os.environ, "TUNELOOP_HOME": str(home / "home"), "TUNELOOP_MODELS_DIR": str(models_dir), **env_extra}
    keys = {p: _key(env, p) for p in ("team-a", "team-b")}
    srv = Server(home, env, workers)
    srv.start()
    return srv, keys


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, models_dir):
    srv, keys = _server(tmp_path_factory, models_dir, "ft-train", 1)
    yield srv, keys
    srv.stop()


@pytest.fixture(scope="module")
def queue(tmp_path_factory, models_dir):
    srv, keys = _server(tmp_path_factory, models_dir, "ft-queue", 0, TUNELOOP_MAX_UPLOAD_BYTES=str(1024 * 1024))
    yield srv, keys
    srv.stop()


def _upload(client, tmp: Path, name: str, rows: list[dict]):
    path = tmp / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = client.files.with_raw_response.create(file=path.open("rb"), purpose="fine-tune").http_response.json()
    return FileObject.model_validate(raw)


def _wait(client, job_id: str, *, until=("succeeded", "failed", "cancelled"), timeout: float = 600) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = FineTuningJob.model_validate(client.fine_tuning.jobs.with_raw_response.retrieve(job_id).http_response
                                           .json())
        if job.status in until:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(1)


def _all_events(client, job_id: str) -> list[FineTuningJobEvent]:
    """Every event, newest first, page by page, each strictly validated."""
    evs, after = [], None
    while True:
        extra = {"after": after} if after else {}
        body = client.fine_tuning.jobs.with_raw_response.list_events(job_id, limit=100, **extra).http_response.json()
        evs += [FineTuningJobEvent.model_validate(e) for e in body["data"]]
        if not body["has_more"]:
            return evs
        after = body["data"][-1]["id"]


def _sft_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
            for r in _rows("sft.jsonl")]


def _ask(client, model: str, question: str) -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                       max_tokens=12, temperature=0)
    return r.choices[0].message.content.strip()


def test_supervised_job_end_to_end_survives_a_server_restart(trainer, tmp_path):
    srv, keys = trainer
    c = srv.client(keys["team-a"])
    f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
    assert f.purpose == "fine-tune" and f.bytes == (tmp_path / "capitals.jsonl").stat().st_size
    assert c.files.content(f.id).read() == (tmp_path / "capitals.jsonl").read_bytes()
    created = c.fine_tuning.jobs.with_raw_response.create(model=BASE, training_file=f.id, suffix="caps", seed=7,
                                                          metadata={"team": "a"}).http_response.json()
    job = FineTuningJob.model_validate(created)
    assert job.status in ("queued", "running") and job.seed == 7 and job.metadata == {"team": "a"}
    assert isinstance(job.hyperparameters.n_epochs, int) and job.hyperparameters.n_epochs > 1   # auto, resolved
    assert job.estimated_finish is not None

    srv.stop()                                  # the API server goes away mid-job: the runner is its own process
    srv.start()
    done = _wait(c, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:{BASE}:team-a:caps:{job.id[len('ftjob-'):][:8]}"
    assert done.trained_tokens and done.finished_at >= done.created_at

    evs = _all_events(c, job.id)
    assert [e.created_at for e in evs] == sorted((e.created_at for e in evs), reverse=True)   # newest first
    assert evs[0].message.startswith("job completed") and evs[-1].message.startswith("job created")
    steps = [e.data["step"] for e in evs if e.type == "metrics" and "loss" in e.data]
    assert steps == sorted(steps, reverse=True) and steps[-1] == 1   # no step lost across the restart
    page1 = c.fine_tuning.jobs.list_events(job.id, limit=3)
    page2 = c.fine_tuning.jobs.list_events(job.id, limit=3, after=page1.data[-1].id)
    assert [e.id for e in page1.data + page2.data] == [e.id for e in evs[:6]]

    raw = c.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id).http_response.json()
    checkpoints = [FineTuningJobCheckpoint.model_validate(x) for x in raw["data"]]
    assert checkpoints and all(x.fine_tuning_job_id == job.id for x in checkpoints)
    assert checkpoints[-1].metrics.train_loss is not None

    questions = [r["messages"][0]["content"] for r in _sft_rows()]
    answers = [r["messages"][1]["content"] for r in _sft_rows()]
    assert done.fine_tuned_model in [m.id for m in c.models.list()]
    tuned = [_ask(c, done.fine_tuned_model, q) for q in questions]
    base = [_ask(c, BASE, q) for q in questions]
    assert sum(t == a for t, a in zip(tuned, answers)) >= 0.9 * len(answers), tuned
    assert sum(b == a for b, a in zip(base, answers)) <= 0.25 * len(answers), base
    ckpt = checkpoints[0].fine_tuned_model_checkpoint       # a checkpoint is servable too
    assert _ask(c, ckpt, questions[0])

    with pytest.raises(openai.BadRequestError) as e:    # SFT does not continue from an adapter (RL does)
        c.fine_tuning.jobs.create(model=done.fine_tuned_model, training_file=f.id)
    assert _error(e)["param"] == "model" and "base model" in _error(e)["message"]

    other = srv.client(keys["team-b"])             # another project's key sees none of it
    for call in (lambda: other.files.retrieve(f.id), lambda: other.fine_tuning.jobs.retrieve(job.id),
                 lambda: other.fine_tuning.jobs.list_events(job.id), lambda: other.files.content(f.id),
                 lambda: _ask(other, done.fine_tuned_model, questions[0])):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in other.files.list()]
    assert job.id not in [x.id for x in other.fine_tuning.jobs.list()]
    assert done.fine_tuned_model not in [m.id for m in other.models.list()]


def test_dpo_and_reinforcement_jobs_train_through_the_api(trainer, tmp_path):
    srv, keys = trainer
    c = srv.client(keys["team-a"])
    pairs = [{"input": {"messages": [{"role": "user", "content": r["prompt"]}]},
              "preferred_output": [{"role": "assistant", "content": r["chosen"]}],
              "non_preferred_output": [{"role": "assistant", "content": r["rejected"]}]} for r in _rows("dpo.jsonl")]
    dpo_file = _upload(c, tmp_path, "pairs.jsonl", pairs)
    dpo = c.fine_tuning.jobs.create(model=BASE, training_file=dpo_file.id, method={
        "type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}})
    rl_rows = [{"messages": r["prompt"], "answer": r["answer"]} for r in _rows("rlvr.jsonl")[:16]]
    rl_file = _upload(c, tmp_path, "colours.jsonl", rl_rows)
    grader = {"type": "string_check", "name": "copy", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    rl = c.fine_tuning.jobs.create(model=BASE, training_file=rl_file.id, method={
        "type": "reinforcement", "reinforcement": {"grader": grader,
                                                   "hyperparameters": {"n_epochs": 1, "batch_size": 16}}})
    done_dpo, done_rl = _wait(c, dpo.id), _wait(c, rl.id)
    assert done_dpo.status == "succeeded", done_dpo.error
    assert done_dpo.method.dpo.hyperparameters.beta == 0.2 and done_dpo.hyperparameters.n_epochs == 1
    assert done_rl.status == "succeeded", done_rl.error
    assert done_rl.method.reinforcement.grader.type == "string_check"
    rewards = [e.data for e in c.fine_tuning.jobs.list_events(rl.id, limit=100).data if e.type == "metrics"]
    assert any(any(k.startswith("reward") for k in d) for d in rewards), rewards
    r = c.chat.completions.create(model=done_rl.fine_tuned_model, max_tokens=4,
                                  messages=[{"role": "user", "content": "Now type the word red"}])
    assert r.model == done_rl.fine_tuned_model and r.choices[0].finish_reason in ("stop", "length")


def test_list_paging_cancel_and_idempotency_under_200_concurrent_creations(queue, tmp_path):
    srv, keys = queue
    c = srv.client(keys["team-a"])
    f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())

    def create(key: str) -> str:
        client = srv.client(keys["team-a"])
        r = client.fine_tuning.jobs.with_raw_response.create(model=BASE, training_file=f.id,
                                                              extra_headers={"Idempotency-Key": key})
        return FineTuningJob.model_validate(r.http_response.json()).id

    keys_sent = [f"k{i % 50}" for i in range(200)]       # 50 keys, each sent four times at once
    with cf.ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(create, keys_sent))
    by_key: dict[str, set[str]] = {}
    for k, i in zip(keys_sent, ids):
        by_key.setdefault(k, set()).add(i)
    assert all(len(v) == 1 for v in by_key.values())                 # no duplicate
    made = {next(iter(v)) for v in by_key.values()}
    assert len(made) == 50                                           # no lost job

    listed = [FineTuningJob.model_validate(j) for j in
              c.fine_tuning.jobs.with_raw_response.list(limit=100).http_response.json()["data"]]
    assert {j.id for j in listed} == made and all(j.status == "queued" for j in listed)
    pages, after = [], None
    while True:
        page = c.fine_tuning.jobs.list(limit=7, after=after) if after else c.fine_tuning.jobs.list(limit=7)
        pages += [j.id for j in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert pages == [j.id for j in listed]                           # newest first, each once

    cancelled = c.fine_tuning.jobs.cancel(listed[0].id)
    assert FineTuningJob.model_validate(cancelled.model_dump()).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.cancel(listed[0].id)


def _error(exc) -> dict:
    return exc.value.response.json()["error"]


def test_bad_input_is_an_openai_error_naming_its_param_and_creates_nothing(queue, tmp_path):
    srv, keys = queue
    c = srv.client(keys["team-b"])
    before_files, before_jobs = len(c.files.list().data), len(c.fine_tuning.jobs.list(limit=100).data)
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not json\n")
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=bad.open("rb"), purpose="fine-tune")
    assert _error(e)["param"] == "file" and "line 1" in _error(e)["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.files.create(file=_jsonl(tmp_path), purpose="batch")
    assert _error(e)["param"] == "purpose"
    big = tmp_path / "big.jsonl"                                   # 3 MiB against the server's 1 MiB limit
    with big.open("w") as out:
        line = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]}) + "\n"
        for _ in range(3 * 1024):
            out.write(line)
    with pytest.raises(openai.APIStatusError) as e:
        c.files.create(file=big.open("rb"), purpose="fine-tune")
    assert e.value.status_code == 413 and _error(e)["param"] == "file"
    assert not list((srv.home / "home" / "files" / "team-b").glob(".upload-*"))   # nothing half-written

    good = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model="no-such/model", training_file=good.id)
    assert _error(e)["param"] == "model"
    for path in ("/etc", "../../models/x", str(srv.home / "model.gguf")):   # never a path on the server
        with pytest.raises(openai.BadRequestError) as e:
            c.fine_tuning.jobs.create(model=path, training_file=good.id)
        assert _error(e)["param"] == "model" and "path on the server" in _error(e)["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=BASE, training_file=good.id,
                                  method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -3}}})
    assert _error(e)["param"] == "method.supervised.hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as e:
        c.fine_tuning.jobs.create(model=BASE, training_file=good.id,
                                  method={"type": "supervised", "supervised": {"hyperparameters": {"warp": 9}}})
    assert _error(e)["param"] == "method.supervised.hyperparameters.warp"
    with pytest.raises(openai.NotFoundError) as e:
        c.fine_tuning.jobs.create(model=BASE, training_file="file-nope")
    assert _error(e)["param"] == "file_id"
    assert len(c.fine_tuning.jobs.list(limit=100).data) == before_jobs        # nothing half-created
    assert len(c.files.list().data) == before_files + 1

    rows = _sft_rows()
    rows[2] = {"messages": [{"role": "user", "content": "hi"}]}    # no assistant turn, on line 3
    broken = _upload(c, tmp_path, "broken.jsonl", rows)
    job = FineTuningJob.model_validate(c.fine_tuning.jobs.with_raw_response.create(
        model=BASE, training_file=broken.id).http_response.json())
    assert job.status == "failed" and job.error.param == "training_file"
    assert f"{broken.id} (broken.jsonl):3: column 'messages' has no assistant message" in job.error.message
    events = c.fine_tuning.jobs.list_events(job.id).data
    assert events and events[0].level == "error"


def test_the_web_ui_is_served_under_ui_with_its_uploads_bounded(queue, tmp_path):
    srv, _ = queue
    for page in ("/ui/", "/ui/jobs", "/ui/datasets", "/ui/registry", "/ui/playground"):
        r = httpx.get(srv.url + page, timeout=30)
        assert r.status_code == 200 and "<html" in r.text.lower(), (page, r.status_code)
    big = b"x" * (2 * 1024 * 1024)                                   # over the server's 1 MiB upload limit
    r = httpx.post(srv.url + "/ui/datasets", files={"file": ("big.jsonl", big)}, data={"name": "big"}, timeout=30,
                   headers={"Origin": srv.url})
    assert r.status_code == 413 and "limit" in r.text


def _jsonl(tmp: Path):
    path = tmp / "ok.jsonl"
    path.write_text(json.dumps(_sft_rows()[0]) + "\n")
    return path.open("rb")


def _status(client, job_id: str) -> str:
    """The raw status: pausing/paused are OpenAI's, newer than this client's FineTuningJob type."""
    return client.fine_tuning.jobs.with_raw_response.retrieve(job_id).http_response.json()["status"]


def test_pause_keeps_the_step_as_a_checkpoint_and_resume_goes_on_from_it(trainer, tmp_path):
    srv, keys = trainer
    c = srv.client(keys["team-a"])
    f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
    job = c.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 100})
    deadline = time.monotonic() + 300
    while not any(e.type == "metrics" and e.data.get("step", 0) >= 10
                  for e in c.fine_tuning.jobs.list_events(job.id, limit=5).data):
        assert time.monotonic() < deadline and _status(c, job.id) in ("queued", "running")
        time.sleep(0.2)
    assert c.fine_tuning.jobs.with_raw_response.pause(job.id).http_response.json()["status"] in ("pausing", "paused")
    while _status(c, job.id) != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    stopped = max(x.step_number for x in c.fine_tuning.jobs.checkpoints.list(job.id).data)
    total = 100 * 2                                        # 16 rows, batch 8: 2 steps an epoch
    assert 10 <= stopped < total
    with pytest.raises(openai.BadRequestError):
        c.fine_tuning.jobs.pause(job.id)                   # already paused

    assert c.fine_tuning.jobs.with_raw_response.resume(job.id).http_response.json()["status"] == "queued"
    done = _wait(c, job.id)
    assert done.status == "succeeded", done.error
    events = _all_events(c, job.id)
    assert any(e.message.endswith(f"resuming from checkpoint-{stopped}") for e in events)
    steps = [e.data["step"] for e in events if e.type == "metrics" and "loss" in e.data]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == total   # no step trained twice, none skipped
