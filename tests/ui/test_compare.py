"""The compare page: several jobs' curves overlaid on one server-drawn SVG per metric, each job
named in a legend with its own dash pattern and marker, their final metrics and evaluation reports
side by side; the Jobs page links to it with a checkbox per job. And a long curve is drawn
downsampled with its min/max band, saying so."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.ui.conftest import fake_job


@pytest.fixture
def services(home):
    from tuneloop.service.app import open_services

    return open_services()


def test_two_jobs_and_an_evaluation_side_by_side(services, tmp_path):
    from tuneloop.ui import create_ui

    store = services.store
    fake_job(store, "default-sft-a", steps=20, metrics={"train_loss": 0.5, "final_loss": 0.25})
    fake_job(store, "default-sft-b", steps=30, metrics={"train_loss": 0.75}, loss=lambda s: 3.0 / (1 + s))
    fake_job(store, "default-eval-1", technique="eval", training_type="sft", output_path=str(tmp_path / "ev"),
             metrics={"loss": 0.4, "exact_match": 0.9, "base/loss": 1.2, "base/exact_match": 0.1})
    c = TestClient(create_ui(services))

    jobs = c.get("/jobs").text
    assert 'action="/compare"' in jobs and 'name="jobs" value="default-sft-a"' in jobs
    page = c.get("/compare", params=[("jobs", "default-sft-a"), ("jobs", "default-sft-b"),
                                     ("jobs", "default-eval-1")])
    assert page.status_code == 200, page.text[:400]
    html = page.text
    loss = html.split('data-metric="loss"', 1)[1].split("</figure>", 1)[0]
    lines = re.findall(r'<polyline points="([^"]+)" class="line"( stroke-dasharray="[^"]+")? data-job="([^"]+)"', loss)
    assert [l[2] for l in lines] == ["default-sft-a", "default-sft-b"]       # the eval job has no curve
    assert lines[0][1] == "" and lines[1][1] != ""                              # solid, then dashed
    assert len(lines[0][0].split()) == 20 and len(lines[1][0].split()) == 30
    legend = loss.split('<ul class="legend">', 1)[1]
    assert "<strong>default-sft-a</strong> (solid): 0.09524 at step 20" in legend
    assert "<strong>default-sft-b</strong> (dashed 6 3): 0.09677 at step 30" in legend
    # shared axes: job b starts higher (3.0/2 vs 2.0/2), so its first point is drawn above a's
    assert float(lines[1][0].split()[0].split(",")[1]) < float(lines[0][0].split()[0].split(",")[1])
    assert 'data-metric="learning_rate"' in html and 'data-metric="reward"' not in html

    table = html.split('id="metrics"', 1)[1].split("</table>", 1)[0]
    row = lambda name: re.sub(r"<[^>]+>", " ", table.split(f'<th scope="row">{name}</th>', 1)[1].split("</tr>", 1)[0]).split()
    assert row("train_loss") == ["0.5", "0.75", "-"]
    assert row("exact_match") == ["-", "-", "0.9"] and row("base/exact_match") == ["-", "-", "0.1"]
    assert str(tmp_path / "ev" / "report.md") in table

    assert c.get("/compare?jobs=default-sft-a,default-sft-b").status_code == 200
    one = c.get("/compare?jobs=default-sft-a")
    assert one.status_code == 400 and "at least two jobs" in one.text and "Tick two or more" in one.text
    assert c.get("/compare?jobs=default-sft-a,nope").status_code == 404


def test_a_long_curve_is_drawn_downsampled_with_its_band(services):
    from tuneloop.ui import create_ui
    from tuneloop.ui.charts import BUCKETS

    spike = 7000
    fake_job(services.store, "default-sft-long", steps=10_000, loss=lambda s: 9.0 if s == spike else 1.0 / s ** 0.5)
    html = TestClient(create_ui(services)).get("/jobs/default-sft-long").text
    panel = html.split('data-metric="loss"', 1)[1].split("</figure>", 1)[0]
    drawn = re.search(r'<polyline points="([^"]+)"', panel).group(1).split()
    band = re.search(r'<polygon points="([^"]+)" class="band"', panel).group(1).split()
    assert len(drawn) == BUCKETS and len(band) == 2 * BUCKETS
    assert min(float(p.split(",")[1]) for p in band) == 8.0            # the spike's 9.0 is the band's top (y=TOP)
    assert "10,000 points, drawn as 500" in panel and "max 9" in panel
    assert "at step 10000" in panel
    assert len(html) < 200_000, len(html)                               # a completed job ships no raw points
