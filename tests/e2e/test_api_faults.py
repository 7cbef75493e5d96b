"""Faults under the fine-tuning API, on live `tuneloop serve` processes: a job's runner killed with
SIGKILL at a random step, ten times, is restarted by the server's workers from its last
checkpoint and every job completes exactly once (one completion, one registered version); the
SQLite database held locked by another writer while 32 clients create jobs: every request waits
and succeeds, none is a 500; the disk filling up while a checkpoint is written (a 12 MB tmpfs under
the job's checkpoints, root only): the job fails saying so, the previous checkpoint is intact and
the half-written one gone, nothing is registered."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.test_api_finetuning import BASE, _all_events, _server, _sft_rows, _upload, _wait

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, models_dir):
    srv, keys = _server(tmp_path_factory, models_dir, "faults-train", 2)
    yield srv, keys
    srv.stop()


def _runner_pid(srv, job_id: str) -> int | None:
    from tuneloop.store import open_store

    row = open_store(f"sqlite:///{srv.home / 'home' / 'tuneloop.db'}").get_job(job_id)
    return row["pid"] if row and row["state"] == "running" else None


def test_runners_killed_at_random_steps_complete_every_job_exactly_once(trainer, tmp_path):
    srv, keys = trainer
    c = srv.client(keys["team-a"])
    f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
    rng = random.Random(13)
    trials = [(c.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 15}).id,
               rng.randint(2, 25)) for _ in range(10)]             # 30 steps each; killed past a random step
    killed: set[str] = set()
    deadline = time.monotonic() + 1500
    while len(killed) < len(trials):
        assert time.monotonic() < deadline
        for job_id, at in trials:
            if job_id in killed:
                continue
            steps = [e.data["step"] for e in c.fine_tuning.jobs.list_events(job_id, limit=3).data
                     if e.type == "metrics" and "step" in (e.data or {})]
            pid = _runner_pid(srv, job_id)
            if steps and max(steps) >= at and pid:
                os.kill(pid, signal.SIGKILL)
                killed.add(job_id)
            elif c.fine_tuning.jobs.retrieve(job_id).status == "succeeded":
                killed.add(job_id)                                   # finished before its step came: no kill
        time.sleep(0.2)
    from tuneloop.store import open_store

    store = open_store(f"sqlite:///{srv.home / 'home' / 'tuneloop.db'}")
    for job_id, _ in trials:
        done = _wait(c, job_id, timeout=900)
        assert done.status == "succeeded", (job_id, done.error)
        messages = [e.message for e in _all_events(c, job_id)]
        assert sum(m.startswith("job completed") for m in messages) == 1
        assert len([p for p in store.list_packages(project="team-a") if p["job_id"] == job_id]) == 1
        assert _wait(c, job_id).fine_tuned_model in [m.id for m in c.models.list()]
    restarted = sum(any("restarting from the last checkpoint" in e.message for e in _all_events(c, j))
                    for j, _ in trials)
    assert restarted >= 5, restarted          # most were killed mid-run and restarted, not just finished


@pytest.fixture(scope="module")
def queue(tmp_path_factory, models_dir):
    srv, keys = _server(tmp_path_factory, models_dir, "faults-queue", 0)     # nothing trains: jobs stay queued
    yield srv, keys
    srv.stop()


def test_a_locked_database_under_32_concurrent_writers_is_waited_for_never_a_500(queue, tmp_path):
    srv, keys = queue
    c = srv.client(keys["team-b"])
    f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
    db = sqlite3.connect(srv.home / "home" / "tuneloop.db", timeout=30, isolation_level=None,
                         check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")                   # another writer holds the database
    release = threading.Timer(3.0, lambda: db.execute("COMMIT"))
    release.start()

    def create(i: int) -> str:
        client = srv.client(keys["team-b"])
        job = client.fine_tuning.jobs.create(model=BASE, training_file=f.id, metadata={"i": str(i)},
                                             hyperparameters={"n_epochs": 1})
        client.fine_tuning.jobs.cancel(job.id)
        return job.id

    started = time.monotonic()
    with cf.ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(create, range(32)))      # an exception (a 500 included) fails the test
    release.join()
    db.close()
    assert time.monotonic() - started >= 3.0        # they did wait for the lock
    assert len(set(ids)) == 32
    listed = {j.id: j.status for j in c.fine_tuning.jobs.list(limit=100)}
    assert all(listed[i] == "cancelled" for i in ids)


def _mount_small_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_full_disk_while_saving_a_checkpoint_fails_the_job_clearly_and_keeps_the_previous_one(
        tmp_path_factory, models_dir, tmp_path):
    srv, keys = _server(tmp_path_factory, models_dir, "faults-disk", 0)      # queue only: the runner is started here
    try:
        c = srv.client(keys["team-a"])
        f = _upload(c, tmp_path, "capitals.jsonl", _sft_rows())
        job = c.fine_tuning.jobs.create(model=BASE, training_file=f.id, hyperparameters={"n_epochs": 20})
        home = srv.home / "home"
        checkpoints = home / "projects" / "team-a" / "jobs" / job.id / "checkpoints"
        if not _mount_small_tmpfs(checkpoints, "12m"):     # one 7.6 MB checkpoint fits, the second does not
            message = "mounting a small tmpfs (the full disk) needs root"
            if os.environ.get("CI") or os.environ.get("TUNELOOP_TEST_STRICT"):  # make test and CI run as root
                pytest.fail(message)
            pytest.skip(message)
        try:
            r = subprocess.run([sys.executable, "-m", "tuneloop.service.runner", job.id], env=srv.env,
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 1
            done = _wait(c, job.id)
            assert done.status == "failed" and done.fine_tuned_model is None
            assert "No space left on device" in done.error.message
            assert "last complete checkpoint is checkpoint-10" in done.error.message, done.error.message
            kept = [p.name for p in checkpoints.iterdir() if p.name.startswith("checkpoint-")]
            assert kept == ["checkpoint-10"]                # the half-written one is gone
            from safetensors.torch import load_file

            assert load_file(str(checkpoints / "checkpoint-10" / "adapter_model.safetensors"))
            assert json.loads((checkpoints / "checkpoint-10" / "trainer_state.json").read_text())["global_step"] == 10
            assert [x.step_number for x in c.fine_tuning.jobs.checkpoints.list(job.id).data] == [10]
            from tuneloop.store import open_store

            store = open_store(f"sqlite:///{home / 'tuneloop.db'}")
            assert store.package_for_job(job.id) is None   # nothing half-registered
            assert done.fine_tuned_model not in [m.id for m in c.models.list()]
        finally:
            subprocess.run(["umount", str(checkpoints)], capture_output=True)
    finally:
        srv.stop()


def _peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_2_gb_upload_is_streamed_to_disk_and_refused_at_the_limit_without_growing_the_server(queue, tmp_path):
    """2 GiB against the default 1 GiB limit: 413 naming `file`, nothing kept, and the server's
    peak memory grows by far less than the file (it is never held in memory)."""
    import httpx

    srv, keys = queue
    big = tmp_path / "huge.jsonl"
    with big.open("wb") as f:
        f.truncate(2 * 1024 ** 3)                   # sparse: the disk holds none of it
    before = _peak_rss_mb(srv.proc.pid)
    with big.open("rb") as body:
        r = httpx.post(srv.url + "/v1/files", files={"file": ("huge.jsonl", body)}, data={"purpose": "fine-tune"},
                       headers={"Authorization": f"Bearer {keys['team-a']}"}, timeout=600)
    assert r.status_code == 413 and r.json()["error"]["param"] == "file", r.text
    assert _peak_rss_mb(srv.proc.pid) - before < 200, (before, _peak_rss_mb(srv.proc.pid))
    folder = srv.home / "home" / "files" / "team-a"
    assert not list(folder.glob(".upload-*")) and not list(folder.glob("file-*"))
