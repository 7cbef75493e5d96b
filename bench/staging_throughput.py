"""Dataset staging benchmarks (results are appended to bench/RESULTS.md).

    .venv/bin/python bench/staging_throughput.py                  # throughput: 1M chat-format DPO rows, vs datasets
    .venv/bin/python bench/staging_throughput.py --rss-gb 2       # peak RSS staging a 2 GB JSONL file
    .venv/bin/python bench/staging_throughput.py --rows 100000 --repeats 1 --no-record   # quick look

Throughput: 1M synthetic DPO rows whose chosen/rejected columns are chat-format conversations
(user + assistant messages), staged by tuneloop (validate every row, flatten, write canonical JSONL)
and by a plain `datasets.load_dataset("json")` + `.map()` doing the same flattening + `.to_json()`,
alternately in one run; medians of `--repeats` runs and their ratio. Peak RSS: a JSONL file of
`--rss-gb` GB generated in /tmp (free disk checked first, deleted afterwards) staged in a child
process; RSS of that process and its workers summed, sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import resource
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up").split()


def generate(path: Path, rows: int | None = None, target_bytes: int | None = None, seed: int = 0) -> int:
    rng = random.Random(seed)
    n = 0
    size = 0
    with open(path, "wb") as f:
        buf = []
        while (rows is not None and n < rows) or (target_bytes is not None and size < target_bytes):
            q = f"Question {n}: " + " ".join(rng.choices(WORDS, k=12))
            row = {"prompt": q,
                   "chosen": [{"role": "user", "content": q},
                              {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=24))}],
                   "rejected": [{"role": "user", "content": q},
                                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=8))}]}
            line = orjson.dumps(row) + b"\n"
            buf.append(line)
            size += len(line)
            n += 1
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    return n


def flat(value):
    """The seed's four flatten strategies, written plainly (what a user's .map() would do)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value["content"]
    if not value:
        return ""
    if len(value) == 1:
        return value[0]["content"]
    if len({m["role"] for m in value}) == 1:
        return "\n".join(m["content"] for m in value)
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (staging workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_baseline(src: Path, out: Path, cache: Path) -> tuple[float, float]:
    from datasets import disable_progress_bars, load_dataset

    disable_progress_bars()
    t, c = time.perf_counter(), cpu_seconds()
    ds = load_dataset("json", data_files=str(src), split="train", cache_dir=str(cache))
    ds = ds.map(lambda r: {"prompt": flat(r["prompt"]), "chosen": flat(r["chosen"]), "rejected": flat(r["rejected"])},
                remove_columns=ds.column_names)
    ds.to_json(str(out), lines=True, force_ascii=False)
    return time.perf_counter() - t, cpu_seconds() - c


def run_tuneloop(src: Path, out: Path) -> tuple[float, float, int]:
    from tuneloop.data.stage import stage_dataset

    t, c = time.perf_counter(), cpu_seconds()
    res = stage_dataset(str(src), "dpo", out, lookup=None)
    return time.perf_counter() - t, cpu_seconds() - c, res.rows


def throughput(args) -> list[str]:
    work = Path(tempfile.mkdtemp(prefix="tl-stage-bench-", dir=args.tmp))
    try:
        src = work / "dpo.jsonl"
        n = generate(src, rows=args.rows)
        size_mb = src.stat().st_size / 1e6
        print(f"generated {n} rows, {size_mb:.0f} MB", flush=True)
        ours, base, ours_cpu, base_cpu = [], [], [], []
        for i in range(args.repeats):
            dt, cpu, rows = run_tuneloop(src, work / "ours.jsonl")
            assert rows == n
            ours.append(n / dt)
            ours_cpu.append(n / cpu)
            print(f"run {i + 1}: tuneloop {n / dt:,.0f} rows/s ({dt:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
            if not args.skip_baseline:
                cache = work / f"hf-cache-{i}"
                dt, cpu = run_baseline(src, work / "base.jsonl", cache)
                shutil.rmtree(cache, ignore_errors=True)
                base.append(n / dt)
                base_cpu.append(n / cpu)
                print(f"run {i + 1}: datasets {n / dt:,.0f} rows/s ({dt:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
        from tuneloop.data.stage import stage_workers

        med = statistics.median
        load = os.getloadavg()[0]
        lines = [f"- tuneloop staging: median {med(ours):,.0f} rows/s wall (runs: {', '.join(f'{x:,.0f}' for x in ours)}; "
                 f"{stage_workers()} worker process(es)), {med(ours_cpu):,.0f} rows per CPU-second"]
        if base:
            lines.append(f"- datasets load_dataset(json) + map + to_json: median {med(base):,.0f} rows/s wall "
                         f"(runs: {', '.join(f'{x:,.0f}' for x in base)}), {med(base_cpu):,.0f} rows per CPU-second")
            lines.append(f"- ratio (medians, same run): {med(ours) / med(base):.2f}x wall, "
                         f"{med(ours_cpu) / med(base_cpu):.2f}x per CPU-second")
        lines.append(f"- machine load average at the end: {load:.1f} on {os.cpu_count()} cores (shared with other work)")
        return [f"Throughput, {n:,} chat-format DPO rows ({size_mb:.0f} MB JSONL), {args.repeats} run(s):"] + lines
    finally:
        shutil.rmtree(work, ignore_errors=True)


CHILD = """
import sys
from pathlib import Path
from tuneloop.data.stage import stage_dataset
res = stage_dataset(sys.argv[1], "dpo", Path(sys.argv[2]), lookup=None)
print(res.rows)
"""


def peak_rss(args) -> list[str]:
    import psutil

    need = int(args.rss_gb * 1e9 * 1.9) + (1 << 30)  # the source, the staged copy, slack
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        return [f"Peak RSS: skipped, {free / 1e9:.1f} GB free in {args.tmp}, {need / 1e9:.1f} GB needed"]
    work = Path(tempfile.mkdtemp(prefix="tl-rss-bench-", dir=args.tmp))
    try:
        src = work / "big.jsonl"
        n = generate(src, target_bytes=int(args.rss_gb * 1e9))
        size = src.stat().st_size
        print(f"generated {n} rows, {size / 1e9:.2f} GB", flush=True)
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(work / "out.jsonl")],
                                stdout=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                total = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.Error:
                total = 0
            peak = max(peak, total)
            time.sleep(0.05)
        dt = time.perf_counter() - t
        out = proc.stdout.read().strip()
        assert proc.returncode == 0 and int(out) == n, (proc.returncode, out)
        return [f"Peak RSS staging a {size / 1e9:.2f} GB JSONL file ({n:,} chat-format DPO rows): "
                f"{peak / 2**20:,.0f} MiB (process + workers), {dt:.0f} s ({n / dt:,.0f} rows/s)"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-gb", type=float, default=0.0, help="also (or only, with --rows 0) measure peak RSS")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--tmp", default="/tmp")
    p.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines: list[str] = []
    if args.rows:
        lines += throughput(args)
    if args.rss_gb:
        lines += peak_rss(args)
    cmd = "python bench/staging_throughput.py " + " ".join(sys.argv[1:])
    report = [f"### {time.strftime('%Y-%m-%d %H:%M')} `{cmd.strip()}` ({os.cpu_count()} CPU cores, shared)", ""] + \
        lines + [""]
    print("\n".join(report))
    if not args.no_record:
        record(Path(__file__).with_name("RESULTS.md"), report)


def record(results: Path, report: list[str]) -> None:
    """Append the report at the end of the "## Dataset staging" section (created when missing)."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    head = "## Dataset staging"
    if head not in text:
        text = text.rstrip("\n") + f"\n\n{head}\n"
    start = text.index(head) + len(head)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt + 1
    section = text[start:end].rstrip("\n")
    results.write_text(text[:start] + section + "\n\n" + "\n".join(report).rstrip("\n") + "\n"
                       + ("\n" + text[end:] if text[end:] else ""))


if __name__ == "__main__":
    main()
