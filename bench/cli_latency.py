"""python bench/cli_latency.py [--repeats 7]

Wall time of commands that do not train (`tuneloop --help`, `tuneloop tune --status`,
`tuneloop config --json`) against the baseline of importing the training stack
(`python -c "import torch, trl"`), which those commands must never pay. Medians of N runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "TUNELOOP_HOME": home, "HF_HUB_OFFLINE": "1"}
        commands = {
            "baseline: python -c 'import torch, trl'": [sys.executable, "-c", "import torch, trl"],
            "python -c pass": [sys.executable, "-c", "pass"],
            "tuneloop --help": [sys.executable, "-m", "tuneloop", "--help"],
            "tuneloop tune --status": [sys.executable, "-m", "tuneloop", "tune", "--status"],
            "tuneloop config --json": [sys.executable, "-m", "tuneloop", "config", "--json"],
        }
        timed(commands["tuneloop tune --status"], env)  # creates the database once
        medians = {}
        for name, cmd in commands.items():
            medians[name] = statistics.median(timed(cmd, env) for _ in range(args.repeats))
        base = medians["baseline: python -c 'import torch, trl'"]
        for name, m in medians.items():
            print(f"{name:<42} {m:6.2f} s   {m / base:5.2f}x of the baseline")


if __name__ == "__main__":
    main()
