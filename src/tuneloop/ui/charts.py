"""A job's curves as the page first shows them: one SVG panel per metric, drawn on the server so
they show before any script runs; `static/curves.js` redraws the same geometry as points arrive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.curves import TITLES, panels, series

W, H = 300, 120                 # the viewBox; static/curves.js uses the same numbers
LEFT, RIGHT, TOP, BOTTOM = 4, 296, 8, 104


@dataclass
class Panel:
    name: str
    title: str
    points: list[tuple[int, float]]

    @property
    def polyline(self) -> str:
        return polyline(self.points)

    @property
    def last(self) -> str:
        return f"{self.points[-1][1]:.4g} at step {self.points[-1][0]}" if self.points else "-"

    @property
    def low(self) -> str:
        return f"min {min(v for _, v in self.points):.4g}" if self.points else ""

    @property
    def high(self) -> str:
        return f"max {max(v for _, v in self.points):.4g}" if self.points else ""


def polyline(points: list[tuple[int, float]]) -> str:
    """SVG points: steps across, values up, each axis scaled to its own range."""
    if not points:
        return ""
    xs, ys = [s for s, _ in points], [v for _, v in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    dx, dy = (x1 - x0) or 1, (y1 - y0) or 1
    return " ".join(f"{LEFT + (s - x0) / dx * (RIGHT - LEFT):.1f},{BOTTOM - (v - y0) / dy * (BOTTOM - TOP):.1f}"
                    for s, v in points)


def job_panels(metric_events: list[dict[str, Any]], technique: str) -> list[Panel]:
    """The panels worth showing: loss (reward for RL) and the learning rate always, so a job
    without metrics yet has them to fill, then what the technique records (KL, accuracy, ...)."""
    curves = series(metric_events)
    first = ["reward" if technique in RL_TECHNIQUES else "loss", "learning_rate"]
    names = first + [n for n in panels(curves) if n not in first]
    return [Panel(n, TITLES.get(n, n), curves.get(n, [])) for n in names]
