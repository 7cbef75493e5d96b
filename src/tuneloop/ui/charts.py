"""A job's curves as the page first shows them: one SVG panel per metric, drawn on the server so
they show before any script runs; `static/curves.js` redraws the same geometry as points arrive.

A long series is drawn downsampled: at most BUCKETS points per curve, each the mean of its run of
consecutive steps, with the run's lowest and highest value kept as a shaded band (the envelope),
so a spike in 10,000 points still shows while the SVG stays a few kilobytes per curve. `overlay`
draws several jobs' series of one metric on shared axes (the compare page), each with its own
dash pattern so they are told apart without colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneloop.catalog import RL_TECHNIQUES
from tuneloop.curves import TITLES, panels, series

W, H = 300, 120                 # the viewBox; static/curves.js uses the same numbers
LEFT, RIGHT, TOP, BOTTOM = 4, 296, 8, 104
BUCKETS = 500                   # the most points a drawn curve has (curves.js: the same)
DASHES = ("", "6 3", "2 2", "8 3 2 3", "1 4", "10 2")   # one per overlaid series, then again
MARKERS = ("●", "■", "▲", "◆", "▼", "★")

Point = tuple[int, float]


def downsample(points: list[Point], buckets: int = BUCKETS) -> tuple[list[Point], list[tuple[int, float, float]]]:
    """(the drawn points, the band): `points` themselves and no band when they fit, else one
    point per run of consecutive points (the run's last step, its mean value) and the run's
    (step, min, max)."""
    if len(points) <= buckets:
        return points, []
    drawn, band = [], []
    n = len(points)
    for b in range(buckets):
        run = points[b * n // buckets:(b + 1) * n // buckets]
        values = [v for _, v in run]
        drawn.append((run[-1][0], sum(values) / len(values)))
        band.append((run[-1][0], min(values), max(values)))
    return drawn, band


@dataclass
class Scale:
    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def of(cls, steps: list[float], values: list[float]) -> "Scale":
        return cls(min(steps), max(steps), min(values), max(values)) if steps else cls(0, 1, 0, 1)

    def xy(self, s: float, v: float) -> str:
        dx, dy = (self.x1 - self.x0) or 1, (self.y1 - self.y0) or 1
        return f"{LEFT + (s - self.x0) / dx * (RIGHT - LEFT):.1f},{BOTTOM - (v - self.y0) / dy * (BOTTOM - TOP):.1f}"


def polyline(points: list[Point], scale: Scale | None = None) -> str:
    """SVG points: steps across, values up, each axis scaled to its own range (or `scale`'s)."""
    if not points:
        return ""
    scale = scale or Scale.of([s for s, _ in points], [v for _, v in points])
    return " ".join(scale.xy(s, v) for s, v in points)


def envelope(band: list[tuple[int, float, float]], scale: Scale) -> str:
    """The band as an SVG polygon: along the highs, back along the lows."""
    return " ".join([scale.xy(s, hi) for s, _, hi in band] + [scale.xy(s, lo) for s, lo, _ in reversed(band)])


@dataclass
class Panel:
    name: str
    title: str
    points: list[Point]                       # every point the job recorded
    drawn: list[Point] = field(init=False)
    band: list[tuple[int, float, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.drawn, self.band = downsample(self.points)

    @property
    def scale(self) -> Scale:
        lows = [lo for _, lo, _ in self.band] or [v for _, v in self.points]
        highs = [hi for _, _, hi in self.band] or [v for _, v in self.points]
        return Scale.of([s for s, _ in self.points], lows + highs)

    @property
    def polyline(self) -> str:
        return polyline(self.drawn, self.scale)

    @property
    def envelope(self) -> str:
        return envelope(self.band, self.scale) if self.band else ""

    @property
    def downsampled(self) -> bool:
        return bool(self.band)

    @property
    def last(self) -> str:
        return f"{self.points[-1][1]:.4g} at step {self.points[-1][0]}" if self.points else "-"

    @property
    def low(self) -> str:
        return f"min {min(v for _, v in self.points):.4g}" if self.points else ""

    @property
    def high(self) -> str:
        return f"max {max(v for _, v in self.points):.4g}" if self.points else ""


def job_panels(metric_events: list[dict[str, Any]], technique: str) -> list[Panel]:
    """The panels worth showing: loss (reward for RL) and the learning rate always, so a job
    without metrics yet has them to fill, then what the technique records (KL, accuracy, ...)."""
    curves = series(metric_events)
    first = ["reward" if technique in RL_TECHNIQUES else "loss", "learning_rate"]
    names = first + [n for n in panels(curves) if n not in first]
    return [Panel(n, TITLES.get(n, n), curves.get(n, [])) for n in names]


@dataclass
class Line:
    label: str                      # the job id
    dash: str                       # SVG stroke-dasharray ("" solid)
    marker: str                     # the symbol at its last point and in the legend
    polyline: str
    end: str                        # "x,y" of its last point
    last: str                       # its last value, as text


@dataclass
class Overlay:
    name: str
    title: str
    lines: list[Line]
    low: str
    high: str
    downsampled: bool


def overlay(name: str, by_job: list[tuple[str, list[Point]]]) -> Overlay:
    """One metric of several jobs on shared axes (steps across, values up), each downsampled."""
    drawn = [(label, *downsample(points)) for label, points in by_job]
    raw = dict(by_job)
    steps = [s for _, pts, _ in drawn for s, _ in pts]
    values = [v for _, pts, band in drawn for v in ([lo for _, lo, _ in band] + [hi for _, _, hi in band]
                                                    or [v for _, v in pts])]
    scale = Scale.of(steps, values)
    lines = []
    for i, (label, pts, _) in enumerate(drawn):
        lines.append(Line(label, DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)], polyline(pts, scale),
                          scale.xy(*pts[-1]) if pts else "",
                          f"{raw[label][-1][1]:.4g} at step {raw[label][-1][0]}" if pts else "-"))
    return Overlay(name, TITLES.get(name, name), lines, f"min {min(values):.4g}" if values else "",
                   f"max {max(values):.4g}" if values else "", any(band for _, _, band in drawn))
