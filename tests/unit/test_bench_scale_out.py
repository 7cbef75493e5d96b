"""bench/scale_out.py's steady rate: the first logged step's time is left out, a step logged twice
apart counts its interval per step."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale_out.py"
SPEC = importlib.util.spec_from_file_location("scale_out", BENCH)
scale_out = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(scale_out)


def test_steady_rate_excludes_the_first_step_and_spans_logging_gaps():
    t = datetime(2026, 12, 4, 20, 0, 0)
    # step 1 logged after a long warm-up (not counted), then 1 s per step, step 4 logged 2 s after step 2
    points = [(t, 1, 100), (t + timedelta(seconds=1), 2, 300), (t + timedelta(seconds=3), 4, 700)]
    r = scale_out.steady_rate(points)
    assert r["tokens_per_s"] == 200.0 and r["steady_tokens"] == 600 and r["steady_s"] == 3.0
    assert r["step_s"] == 1.0


def test_steady_rate_needs_two_logged_steps():
    assert scale_out.steady_rate([(datetime(2026, 12, 4), 1, 100)])["tokens_per_s"] is None


def test_rows_are_of_one_shape():
    rows = scale_out.make_rows(5)
    assert {(len(r["prompt"].split()), len(r["completion"].split())) for r in rows} == {(12, 48)}
    assert rows == scale_out.make_rows(5) and rows != scale_out.make_rows(5, seed=1)
