"""tuneloop.curves: metric events to series (resumed steps keep their last value), panel choice per
technique, and a PNG with one titled panel per metric."""

from __future__ import annotations

import math

from tuneloop.curves import TITLES, panels, plot, series


def ev(step, **metrics):
    return {"type": "metrics", "data": {"step": step, **metrics}}


def test_series_orders_steps_keeps_the_last_value_and_drops_non_numbers():
    events = [ev(1, loss=3.0, learning_rate=1e-3), ev(2, loss=2.0), {"type": "message", "data": {"step": 9}},
              ev(2, loss=1.5, note="x", flag=True), ev(3, loss=math.nan, grad_norm=4.0)]
    s = series(events)
    assert s["loss"] == [(1, 3.0), (2, 1.5)]  # step 2 re-logged after a resume: the last value; NaN dropped
    assert s["learning_rate"] == [(1, 1e-3)] and s["grad_norm"] == [(3, 4.0)]
    assert "note" not in s and "flag" not in s


def test_panels_put_the_headline_first_and_skip_bookkeeping():
    sft = {k: [(1, 1.0)] for k in ("num_tokens", "grad_norm", "learning_rate", "loss", "train_runtime", "epoch")}
    assert panels(sft) == ["loss", "learning_rate", "grad_norm"]
    rl = {k: [(1, 1.0)] for k in ("loss", "reward", "reward_std", "kl", "learning_rate", "said_a_colour")}
    assert panels(rl) == ["reward", "loss", "learning_rate", "kl", "said_a_colour"]  # reward_std is reward's band
    dpo = {k: [(1, 1.0)] for k in ("rewards/margins", "loss", "rewards/accuracies")}
    assert panels(dpo) == ["loss", "rewards/accuracies", "rewards/margins"]


def test_plot_writes_a_png_with_one_titled_panel_per_metric(tmp_path):
    import matplotlib.image

    curves = {"reward": [(s, s / 10) for s in range(1, 11)], "reward_std": [(s, 0.1) for s in range(1, 11)],
              "loss": [(s, 1 / s) for s in range(1, 11)], "kl": [(s, s / 100) for s in range(1, 11)]}
    drawn = plot(curves, tmp_path / "c.png", "job")
    assert drawn == ["reward", "loss", "kl"]
    image = matplotlib.image.imread(tmp_path / "c.png")
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 0.01  # not blank
    assert all(name in TITLES for name in drawn)
