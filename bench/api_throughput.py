"""python bench/api_throughput.py [--jobs 1000] [--clients 32] [--seconds 10] [--upload-mb 500]
                             [--client asyncio|aiohttp|threads]

The fine-tuning API's throughput, against a live `tuneloop serve --workers 0` on a fresh
TUNELOOP_HOME (the built-in model; nothing trains):

1. job list (`GET /v1/fine_tuning/jobs?limit=20`) and retrieve (`GET /v1/fine_tuning/jobs/ID`)
   requests/s and latency percentiles with --jobs jobs in the database and --clients concurrent
   clients, each on its own keep-alive connection, for --seconds each; the target is p99 under
   100 ms on this 2-core machine. The clients (`--client`): `asyncio` (default), connections on
   one asyncio loop that each send a GET and read the status, headers and whole body before the
   next, as wrk does; `aiohttp`, a session of one connection each on one loop; `threads`, a thread
   and httpx.Client each (this bench's first version, the heaviest client). One job is made
   through the API; the others are inserted with the store's own calls as copies of it (a
   creation runs the whole prepare, which is not what this measures). The server is an open one
   (no keys): a project key's lookup, in the thread pool, is not measured here.
   The clients run in this process on the same 2 cores, so the server's own CPU per request is
   reported too (from /proc), and the clients' (this process's): the server's is what a client
   on another machine would see it need.
2. upload MB/s of a --upload-mb MB JSONL file through `POST /v1/files` (streamed multipart, the
   openai client) vs the baseline: `shutil.copyfileobj` of the same file to the same disk, the
   fastest a byte can go from one file to another here. `--upload-mb 0` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--workers", "0",
                             "--model", "tuneloop/tiny-qwen3"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(log.read_text())


def seed_jobs(home: Path, file_id: str, template: dict, n: int) -> list[str]:
    """n jobs as the API leaves them: a fine_tuning_jobs record and its queued tuneloop job."""
    os.environ["TUNELOOP_HOME"] = str(home)
    from tuneloop.service.app import open_services

    svc = open_services()
    ids = []
    for i in range(n):
        job_id = "ftjob-" + uuid.uuid4().hex[:24]
        svc.store.finetuning.add_job(dict(id=job_id, project="default", status="submitted", model=template["model"],
                                          training_file=file_id, validation_file=None, method=template["method"],
                                          suffix=None, seed=None, metadata={"i": str(i)}, idempotency_key=None,
                                          fine_tuned_model=f"ft:{template['model']}:default::{job_id[6:14]}"))
        svc.store.insert_job(dict(id=job_id, project="default", technique="sft", training_type="lora",
                                  model=template["model"], dataset=template["dataset"], spec=template["spec"],
                                  plan=template["plan"], job_dir=str(home / "jobs" / job_id), active_key=None,
                                  dataset_sha256="0" * 64, dataset_rows=16, total_steps=10))
        ids.append(job_id)
    return ids


def hammer(url: str, paths: list[str], clients: int, seconds: float, server_pid: int | None = None,
           kind: str = "aiohttp") -> dict:
    cpu0 = server_cpu(server_pid)
    started = time.monotonic()
    own0 = sum(os.times()[:2])
    fn = {"asyncio": hammer_raw, "aiohttp": hammer_aiohttp, "threads": hammer_threads}[kind]
    latencies, errors = fn(url, paths, clients, seconds)
    wall = time.monotonic() - started
    cpu = server_cpu(server_pid) - cpu0
    own = sum(os.times()[:2]) - own0
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": q[49] * 1000,
            "p99_ms": q[98] * 1000, "errors": errors, "server_cpu_ms_per_request": cpu * 1000 / len(latencies),
            "server_cpu_share": cpu / wall, "client_cpu_ms_per_request": own * 1000 / len(latencies)}


def hammer_raw(url: str, paths: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` keep-alive HTTP/1.1 connections on one asyncio loop, each sending a GET and reading
    its status line, headers and Content-Length body before the next (what wrk does, in Python)."""
    import asyncio

    host, port = url.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors = [0]
    heads = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer x\r\n\r\n".encode() for p in paths]

    async def client(k: int, stop: float) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = k
        while time.monotonic() < stop:
            t = time.perf_counter()
            writer.write(heads[i % len(heads)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            errors[0] += head[9:12] != b"200"
            i += clients
        writer.close()

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(k, stop) for k in range(clients)))

    asyncio.run(main())
    return latencies, errors[0]


def hammer_aiohttp(url: str, paths: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` tasks on one loop, each with its own session of one keep-alive connection."""
    import asyncio

    import aiohttp

    latencies: list[float] = []
    errors = [0]

    async def client(k: int, stop: float) -> None:
        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=1),
                                         headers={"Authorization": "Bearer x"}) as s:
            i = k
            while time.monotonic() < stop:
                t = time.perf_counter()
                async with s.get(paths[i % len(paths)]) as r:
                    await r.read()
                    latencies.append(time.perf_counter() - t)
                    errors[0] += r.status != 200
                i += clients

    async def main() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(*(client(k, stop) for k in range(clients)))

    asyncio.run(main())
    return latencies, errors[0]


def hammer_threads(url: str, paths: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    """`clients` threads, each with one httpx.Client (one keep-alive connection)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer x"}) as c:
            i = k
            while time.monotonic() < stop:
                t = time.perf_counter()
                r = c.get(paths[i % len(paths)])
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors[0] += 1
                i += clients
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def server_cpu(pid: int | None) -> float:
    """CPU seconds the server process has used (user + system), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--upload-mb", type=int, default=500, help="0: no upload")
    ap.add_argument("--client", choices=("asyncio", "aiohttp", "threads"), default="asyncio")
    args = ap.parse_args()
    import openai

    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-api-bench-"))
    home = tmp / "home"
    env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "TUNELOOP_MAX_UPLOAD_BYTES": str((args.upload_mb + 64) * 1024 * 1024)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(env, port, tmp / "serve.log")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
        train = tmp / "train.jsonl"
        train.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                          {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                                 for i in range(16)))
        f = client.files.create(file=train.open("rb"), purpose="fine-tune")
        first = client.fine_tuning.jobs.create(model="tuneloop/tiny-qwen3", training_file=f.id)
        os.environ["TUNELOOP_HOME"] = str(home)
        from tuneloop.service.app import open_services

        store = open_services().store
        row = store.get_job(first.id)
        template = {"model": "tuneloop/tiny-qwen3", "dataset": row["dataset"], "spec": row["spec"],
                    "plan": row["plan"], "method": store.finetuning.get_job("default", first.id)["method"]}
        ids = [first.id] + seed_jobs(home, f.id, template, args.jobs - 1)
        print(f"{len(ids)} jobs in the database; {args.clients} clients ({args.client}), {args.seconds:g} s each")
        for name, paths in (("list (limit 20)", ["/v1/fine_tuning/jobs?limit=20"]),
                            ("retrieve", [f"/v1/fine_tuning/jobs/{i}" for i in ids])):
            r = hammer(url, paths, args.clients, args.seconds, proc.pid, args.client)
            print(f"{name}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                  f"{r['errors']} errors; the server used {r['server_cpu_ms_per_request']:.2f} CPU ms a request "
                  f"({r['server_cpu_share']:.2f} cores); the clients {r['client_cpu_ms_per_request']:.2f}")
        if args.upload_mb <= 0:
            return
        big = tmp / "big.jsonl"
        line = json.dumps({"messages": [{"role": "user", "content": "x" * 480},
                                        {"role": "assistant", "content": "y" * 480}]}) + "\n"
        with big.open("w") as out:
            for _ in range(args.upload_mb * 1024 * 1024 // len(line)):
                out.write(line)
        size = big.stat().st_size / 1e6
        copies, uploads = [], []
        for _ in range(2):
            t = time.perf_counter()
            with big.open("rb") as src, (tmp / "copy.jsonl").open("wb") as dst:
                shutil.copyfileobj(src, dst)        # into the page cache, as the upload's writes
            copies.append(time.perf_counter() - t)
            (tmp / "copy.jsonl").unlink()
            t = time.perf_counter()
            up = client.files.create(file=big.open("rb"), purpose="fine-tune")
            uploads.append(time.perf_counter() - t)
            client.files.delete(up.id)
        copy_s, up_s = min(copies), min(uploads)
        print(f"upload {size:.0f} MB: {size / up_s:.0f} MB/s vs shutil.copyfileobj {size / copy_s:.0f} MB/s "
              f"({copy_s / up_s:.2f}x the copy's rate)")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
