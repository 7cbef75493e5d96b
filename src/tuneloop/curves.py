"""A job's metric curves: the per-step series its runner recorded, as a table, JSON or a PNG.

    tuneloop metrics JOB --plot curves.png

`series(events)` is pure (metric events in, {name: [(step, value)]} out; a step logged twice, as
after a resume, keeps its last value). `plot(...)` draws one panel per metric, each titled with what
it shows, so nobody hunts through a legend: the loss (SFT, DPO) or reward with its spread (RL)
first, then the learning rate, then what the technique adds (KL, preference accuracy, margins).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TITLES = {
    "loss": "training loss", "reward": "reward (mean of the step's completions, ± std)",
    "learning_rate": "learning rate", "kl": "KL to the starting model", "rewards/accuracies":
    "DPO preference accuracy (chosen > rejected)", "rewards/margins": "DPO reward margin (chosen - rejected)",
    "completions/mean_length": "completion length (tokens)", "reward/failed": "share of rewards that failed",
    "grad_norm": "gradient norm", "mean_token_accuracy": "token accuracy",
}
ORDER = ("loss", "reward", "learning_rate", "kl", "rewards/accuracies", "rewards/margins", "mean_token_accuracy",
         "completions/mean_length", "reward/failed", "grad_norm")


SKIP = ("epoch", "num_tokens", "total_flos", "step_time", "entropy")


def series(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    by_name: dict[str, dict[int, float]] = {}
    for e in events:
        data = e.get("data") or {}
        if e.get("type") != "metrics" or not isinstance(data.get("step"), int):
            continue
        for name, value in data.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                by_name.setdefault(name, {})[data["step"]] = float(value)
    return {name: sorted(points.items()) for name, points in by_name.items()}


def panels(curves: dict[str, list[tuple[int, float]]], limit: int = 6) -> list[str]:
    """The metrics worth a panel, in reading order: ORDER first, then the rest alphabetically.
    `reward_std` is drawn as the reward's band, not on its own."""
    order = ("reward", "loss") + ORDER[2:] if "reward" in curves else ORDER   # RL: the reward is the headline
    names = [n for n in order if n in curves] + sorted(n for n in curves if n not in ORDER and n != "reward_std"
                                                        and n not in SKIP and not n.startswith("train_"))
    return names[:limit]


def plot(curves: dict[str, list[tuple[int, float]]], out: Path, title: str) -> list[str]:
    """Write a PNG with one panel per metric; returns the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = panels(curves)
    if not names:
        raise ValueError("no metrics recorded")
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*curves[name])
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, color="tab:blue")
        if name == "reward" and "reward_std" in curves:
            std = dict(curves["reward_std"])
            lo = [v - std.get(s, 0.0) for s, v in curves[name]]
            hi = [v + std.get(s, 0.0) for s, v in curves[name]]
            ax.fill_between(steps, lo, hi, alpha=0.2, color="tab:blue")
        ax.set_title(TITLES.get(name, name), fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if name == "learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return names
