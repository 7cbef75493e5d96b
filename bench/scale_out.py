"""python bench/scale_out.py [--model tuneloop/small-qwen3] [--steps 48] [--ray-steps 96] [--rows 512]
                           [--batch-size 8] [--repeats 3] [--skip-ray] [--out FILE.json]

A quick smoke run (a few minutes): `python bench/scale_out.py --model tuneloop/tiny-qwen3 --steps 4
--ray-steps 4 --repeats 1`.

Scale-out on this machine, through `tuneloop tune` as a user runs it, baselines in the same script:

1. scaling efficiency: the same SFT LoRA job (same rows, same global batch --batch-size, --steps
   optimizer steps; the default is about 60 s of training for tuneloop/small-qwen3 on 2 quiet cores)
   with `--num-processes 1` vs `--num-processes 2` (DDP over gloo). Training tokens/s is the steady
   rate from the job's metrics events (TRL's cumulative `num_tokens`, the non-padding tokens of every
   rank, between the first and the last logged step: start-up and the first step are left out);
   wall time is the `tuneloop tune` command from submit to completed, start-up included.
   efficiency = tps(2) / (2 x tps(1)). On a CPU the ranks share its cores (the planner gives each
   cores / N threads, the one-process run all of them), so on 2 cores the physical limit is
   tps(2) / tps(1) = 1.0 (efficiency 0.5): the same two cores either way. tps(2)/tps(1) is printed
   beside it with each run's threads per process.
2. Ray backend overhead: the same job (--ray-steps, default about 2 minutes) with `--backend ray
   --num-processes 2` vs the local `--num-processes 2`, alternated, both while the script's own
   local Ray head (`ray start --head --block` on 127.0.0.1, --num-cpus = this machine's cores, in
   its own process group, which is stopped at the end) is up, so both see the same idle head:
   overhead = (ray wall - local wall) / local wall, submit to completed; target under 15%. Ray's
   steady tokens/s is printed too, but its events reach the store through the driver's relay every
   0.5 s, so over a few steps it is coarse.

Every job runs in its own fresh TUNELOOP_HOME (a temporary folder) with HF_HUB_OFFLINE=1, sharing one
models folder where the built-in model is built before anything is timed. Runs alternate A/B (B/A on
odd repeats); medians over --repeats (and every run's value) are printed; --out writes all of it as
JSON. The rows are generated, all of one shape (12-word prompt, 48-word answer), so however the
planner splits the global batch into micro-batches per layout, they carry about the same padding.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
WORDS = ("the model learns to answer questions about data training evaluation serving adapters and "
         "preferences with short and long sentences that vary a lot in length so padding matters").split()
TARGET_RAY_OVERHEAD = 0.15


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """n SFT rows of one shape: a 12-word prompt and a 48-word completion, fixed seed."""
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choice(WORDS) for _ in range(12)),
             "completion": " ".join(rng.choice(WORDS) for _ in range(48))} for _ in range(n)]


def steady_rate(points: list[tuple[datetime, int, float]]) -> dict:
    """From the metrics events' (time, step, cumulative tokens), in step order: the tokens/s between
    the first and the last logged step (the first step's own time, which holds the warm-up, is left
    out) and the median seconds per step over that span."""
    if len(points) < 2:
        return {"tokens_per_s": None, "step_s": None, "steady_tokens": 0, "steady_s": 0.0}
    (t0, s0, n0), (t1, s1, n1) = points[0], points[-1]
    span = (t1 - t0).total_seconds()
    gaps = [(b[0] - a[0]).total_seconds() / (b[1] - a[1]) for a, b in zip(points, points[1:]) if b[1] > a[1]]
    return {"tokens_per_s": (n1 - n0) / span if span > 0 else None, "step_s": statistics.median(gaps),
            "steady_tokens": int(n1 - n0), "steady_s": span}


def clean_env(home: Path, models_dir: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUNELOOP_PROJECT", "TUNELOOP_DATABASE_URL", "MLFLOW_TRACKING_URI", "TUNELOOP_RAY_ADDRESS")}
    env.update({"TUNELOOP_HOME": str(home), "TUNELOOP_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", **(extra or {})})
    return env


def job_record(home: Path, models_dir: Path, job_id: str) -> tuple[dict, list[dict]]:
    """The job row and its events, read from that run's own store the way an edge reads them."""
    saved = {k: os.environ.get(k) for k in ("TUNELOOP_HOME", "TUNELOOP_MODELS_DIR", "TUNELOOP_DATABASE_URL")}
    os.environ.pop("TUNELOOP_DATABASE_URL", None)
    os.environ["TUNELOOP_HOME"], os.environ["TUNELOOP_MODELS_DIR"] = str(home), str(models_dir)
    try:
        from tuneloop.service.app import open_services

        store = open_services().store
        return store.get_job(job_id), store.list_events(job_id)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_job(label: str, args, data: Path, models_dir: Path, steps: int, processes: int,
            ray_address: str | None = None) -> dict:
    """One `tuneloop tune` in a fresh TUNELOOP_HOME, timed from submit to the command's exit."""
    home = Path(tempfile.mkdtemp(prefix="tl-scale-"))
    cmd = [sys.executable, "-m", "tuneloop", "tune", "--technique", "sft", "--model", args.model,
           "--dataset", str(data), "--project", "bench", "--batch-size", str(args.batch_size),
           "--max-steps", str(steps), "--num-processes", str(processes), "--json"]
    extra = {}
    if ray_address:
        cmd[-1:-1] = ["--backend", "ray"]
        extra["TUNELOOP_RAY_ADDRESS"] = ray_address
    try:
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(home, models_dir, extra), cwd=REPO)
        wall = time.perf_counter() - start
        try:
            job_id = json.loads(out.stdout)["job"]["id"]
        except (ValueError, KeyError):
            sys.exit(f"{label}: tuneloop tune failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n"
                     f"{out.stderr[-4000:]}")
        job, events = job_record(home, models_dir, job_id)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if job["state"] != "completed":
        sys.exit(f"{label}: job {job_id} ended {job['state']}: {job.get('error')}\n"
                 + "\n".join(e["message"] for e in events[-20:]))
    points = sorted((e["created_at"], e["data"]["step"], e["data"]["num_tokens"]) for e in events
                    if e["type"] == "metrics" and "loss" in (e["data"] or {}) and "num_tokens" in e["data"])
    first_step = next(e["created_at"] for e in events if e["type"] == "metrics")
    started = next((e["created_at"] for e in events if e["message"].startswith("training started")), None)
    plan = job["plan"] or {}
    return {"label": label, "job_id": job_id, "wall_s": wall,
            "job_s": (job["finished_at"] - job["created_at"]).total_seconds(),
            "startup_s": (first_step - job["created_at"]).total_seconds(),   # submit to the first logged step
            "to_training_started_s": (started - job["created_at"]).total_seconds() if started else None,
            "steps": points[-1][1] if points else 0, "tokens": int(points[-1][2]) if points else 0,
            **steady_rate(points), "processes": processes, "backend": "ray" if ray_address else "local",
            "threads_per_process": plan.get("threads"), "per_device_batch": plan.get("per_device_batch"),
            "grad_accum": plan.get("grad_accum"), "global_batch": plan.get("global_batch"),
            "precision": plan.get("precision")}


def alternate(pair: list[tuple[str, dict]], repeats: int, runner) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {label: [] for label, _ in pair}
    for i in range(repeats):
        for label, kw in (pair if i % 2 == 0 else pair[::-1]):
            r = runner(label, **kw)
            runs[label].append(r)
            tps = f"{r['tokens_per_s']:7.0f}" if r["tokens_per_s"] else "    n/a"
            print(f"  [{i + 1}/{repeats}] {label:<22} wall {r['wall_s']:6.1f} s (job {r['job_s']:6.1f} s, first step "
                  f"logged at {r['startup_s']:5.1f} s)  {tps} tok/s steady  {r['step_s'] or 0:.2f} s/step  "
                  f"{r['steps']} steps {r['tokens']} tokens  {r['processes']} x {r['threads_per_process']} threads, "
                  f"batch {r['per_device_batch']} x {r['grad_accum']} -> {r['global_batch']}", flush=True)
    return runs


def med(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def _vals(runs: list[dict], key: str, fmt: str = ".0f") -> str:
    return ", ".join(format(r[key], fmt) if r[key] is not None else "n/a" for r in runs)


def table(runs: dict[str, list[dict]]) -> None:
    print("\n| run | processes x threads | per-device batch x accum | steady tokens/s (median; runs) | s/step "
          "| wall s, submit to completed (median; runs) | first step logged at |")
    print("|---|---|---|---|---|---|---|")
    for label, rs in runs.items():
        r, tps = rs[0], med(rs, "tokens_per_s")
        rate = f"{tps:.0f} ({_vals(rs, 'tokens_per_s')}) | {med(rs, 'step_s'):.2f}" if tps else "n/a | n/a"
        print(f"| {label} | {r['processes']} x {r['threads_per_process']} | {r['per_device_batch']} x "
              f"{r['grad_accum']} | {rate} | {med(rs, 'wall_s'):.1f} ({_vals(rs, 'wall_s', '.1f')}) | "
              f"{med(rs, 'startup_s'):.1f} s |")
    counts = sorted({r["tokens"] for rs in runs.values() for r in rs})
    if len(counts) > 1:
        print(f"WARNING: the runs trained on different token counts {counts}")


def scaling(args, data: Path, models_dir: Path) -> dict:
    print(f"\n1. scaling: --num-processes 1 vs 2, {args.steps} steps of {args.batch_size} rows", flush=True)

    def runner(label, processes):
        return run_job(label, args, data, models_dir, args.steps, processes)

    runs = alternate([("1 process", {"processes": 1}), ("2 processes (DDP)", {"processes": 2})], args.repeats, runner)
    table(runs)
    one, two = med(runs["1 process"], "tokens_per_s"), med(runs["2 processes (DDP)"], "tokens_per_s")
    w1, w2 = med(runs["1 process"], "wall_s"), med(runs["2 processes (DDP)"], "wall_s")
    cores = len(os.sched_getaffinity(0))
    t1 = runs["1 process"][0]["threads_per_process"]
    t2 = runs["2 processes (DDP)"][0]["threads_per_process"]
    out = {"runs": runs, "tps_1": one, "tps_2": two, "wall_1": w1, "wall_2": w2, "cores": cores,
           "threads_1": t1, "threads_2": t2}
    if one and two:
        out.update(efficiency=two / (2 * one), tps_ratio=two / one)
        print(f"\nefficiency tps(2) / (2 x tps(1)) = {two:.0f} / (2 x {one:.0f}) = {out['efficiency']:.2f}; "
              f"tps(2)/tps(1) = {out['tps_ratio']:.2f}x (the 1-process run used {t1} threads, each of the 2 ranks "
              f"{t2}, on {cores} cores: sharing the cores, tps(2)/tps(1) = 1.0 is the physical limit); wall "
              f"time incl. start-up {w2:.1f} s vs {w1:.1f} s = {w2 / w1:.2f}x")
    return out


def start_ray(temp: Path) -> tuple[str, subprocess.Popen]:
    """A local Ray head on 127.0.0.1, run with --block in a session of its own, so stopping it ends
    exactly the processes it started (its process group) and no other Ray on the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = temp / "ray-start.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([str(RAY), "start", "--head", "--block", "--num-cpus",
                                 str(len(os.sched_getaffinity(0))), "--port", str(port), "--node-ip-address",
                                 "127.0.0.1", "--include-dashboard=false", "--temp-dir", str(temp),
                                 "--disable-usage-stats"], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "RAY_TMPDIR": str(temp)}, start_new_session=True)
    deadline = time.monotonic() + 300
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_ray(proc)
            sys.exit(f"ray start failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return f"127.0.0.1:{port}", proc


def stop_ray(proc: subprocess.Popen) -> None:
    """SIGTERM to the head's process group (ray start --block stops what it started), SIGKILL after 60 s."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait   # the head is gone: give its children the same time
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def ray_overhead(args, data: Path, models_dir: Path) -> dict:
    n = args.ray_processes
    print(f"\n2. Ray backend: --backend ray --num-processes {n} vs local --num-processes {n}, "
          f"{args.ray_steps} steps", flush=True)
    if not RAY.is_file():
        sys.exit(f"{RAY} not found: install tuneloop[ray] (make does), or pass --skip-ray")
    temp = Path(tempfile.mkdtemp(prefix="tl-ray-"))
    t0 = time.perf_counter()
    address, head = start_ray(temp)
    print(f"  local Ray head at {address} ({time.perf_counter() - t0:.1f} s to start; not counted)", flush=True)
    try:
        def runner(label, ray):
            return run_job(label, args, data, models_dir, args.ray_steps, n, address if ray else None)

        runs = alternate([(f"local x{n}", {"ray": False}), (f"ray x{n}", {"ray": True})], args.repeats, runner)
    finally:
        stop_ray(head)
        shutil.rmtree(temp, ignore_errors=True)
    table(runs)
    local, ray = med(runs[f"local x{n}"], "wall_s"), med(runs[f"ray x{n}"], "wall_s")
    overhead = (ray - local) / local
    per_run = [(r["wall_s"] - l["wall_s"]) / l["wall_s"] for l, r in zip(runs[f"local x{n}"], runs[f"ray x{n}"])]
    verdict = "meets" if overhead < TARGET_RAY_OVERHEAD else "misses"
    print(f"\nRay overhead (ray - local) / local, wall submit to completed: ({ray:.1f} - {local:.1f}) / {local:.1f} = "
          f"{overhead:+.1%} (pairs: {', '.join(f'{o:+.1%}' for o in per_run)}); {verdict} the target of "
          f"{TARGET_RAY_OVERHEAD:.0%}. Start-up (submit to the first logged step): ray "
          f"{med(runs[f'ray x{n}'], 'startup_s'):.1f} s, local {med(runs[f'local x{n}'], 'startup_s'):.1f} s")
    return {"runs": runs, "wall_local": local, "wall_ray": ray, "overhead": overhead, "overhead_pairs": per_run,
            "target": TARGET_RAY_OVERHEAD}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[2], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="tuneloop/small-qwen3", help="a built-in model [default: %(default)s]")
    ap.add_argument("--steps", type=int, default=48, help="optimizer steps of the scaling runs (~60 s quiet)")
    ap.add_argument("--ray-steps", type=int, default=96, help="optimizer steps of the Ray runs (~2 min quiet)")
    ap.add_argument("--rows", type=int, default=512, help="generated rows (fewer than steps x batch: several epochs)")
    ap.add_argument("--batch-size", type=int, default=8, help="the global batch, the same in every layout")
    ap.add_argument("--ray-processes", type=int, default=2, help="Ray Train workers (and the local layout it is "
                                                                 "compared with)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-ray", action="store_true", help="only the scaling part")
    ap.add_argument("--skip-scaling", action="store_true", help="only the Ray part")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: load average {os.getloadavg()}; "
          f"{len(os.sched_getaffinity(0))} cores; {args.model}", flush=True)
    result: dict = {"args": vars(args), "load_start": load_start}
    with tempfile.TemporaryDirectory(prefix="tl-bench-") as tmp:
        models_dir = Path(os.environ.get("TUNELOOP_MODELS_DIR") or Path(tmp) / "models")
        t0 = time.perf_counter()
        built = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from tuneloop.models.builtin import ensure_builtin; "
                                "print(ensure_builtin(sys.argv[1], Path(sys.argv[2])))", args.model, str(models_dir)],
                               capture_output=True, text=True, env=clean_env(Path(tmp) / "home", models_dir))
        if built.returncode != 0:
            sys.exit(f"could not build {args.model}:\n{built.stderr[-3000:]}")
        print(f"model folder {built.stdout.strip()} ({time.perf_counter() - t0:.1f} s; not counted)", flush=True)
        data = Path(tmp) / "sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in make_rows(args.rows)))
        if not args.skip_scaling:
            result["scaling"] = scaling(args, data, models_dir)
        if not args.skip_ray:
            result["ray"] = ray_overhead(args, data, models_dir)
    result["load_end"] = os.getloadavg()[0]
    print(f"\nload average {load_start:.2f} at the start, {result['load_end']:.2f} at the end")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
