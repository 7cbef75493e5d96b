"""The new pages in Chromium against `tuneloop ui` as a subprocess: a job page with 10,000 metric
points loads in under a second (drawn downsampled, saying so), the compare page passes the
accessibility check on a laptop and a phone, and the new-job form can be completed with the
keyboard alone, through the plan to "Start this job" and on to cancelling the job."""

from __future__ import annotations

import re

import pytest

from tests.conftest import DEMO_DATA
from tests.ui.conftest import fake_job
from tests.ui.test_browser import check_a11y

LOAD = "() => performance.getEntriesByType('navigation')[0].loadEventEnd"


@pytest.fixture
def services(home):
    from tuneloop.service.app import open_services

    return open_services()


def test_a_job_with_10000_points_loads_under_a_second(services, ui_server, browser, artifacts):
    fake_job(services.store, "default-sft-long", steps=10_000, loss=lambda s: 3.0 / s ** 0.3 + (0.5 if s % 97 == 0 else 0))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_server.url + "/jobs/default-sft-long")
    elapsed = page.evaluate(LOAD)                    # ms from the navigation's start to the end of load
    print(f"\n/jobs/ID with 10,000 points: loaded in {elapsed:.0f} ms")
    assert 0 < elapsed < 1000, elapsed
    assert "10,000 points, drawn as 500" in page.locator('.panel[data-metric="loss"]').inner_text()
    assert len(page.locator('.panel[data-metric="loss"] polyline').get_attribute("points").split()) == 500
    check_a11y(page, "job with 10,000 points")


def test_compare_passes_the_accessibility_check(services, ui_server, browser, artifacts):
    fake_job(services.store, "default-sft-a", steps=40, metrics={"train_loss": 0.5})
    fake_job(services.store, "default-sft-b", steps=60, metrics={"train_loss": 0.7}, loss=lambda s: 3.0 / (1 + s))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_server.url + "/jobs")
    check_a11y(page, "jobs with checkboxes")
    page.get_by_label("compare default-sft-a").check()
    page.get_by_label("compare default-sft-b").check()
    page.get_by_role("button", name="Compare the ticked jobs").click()
    page.wait_for_url(re.compile(r".*/compare\?jobs=default-sft-"))
    assert page.locator('.panel[data-metric="loss"] polyline').count() == 2
    assert "default-sft-a (dashed 6 3)" in page.locator('.panel[data-metric="loss"] .legend').inner_text()
    check_a11y(page, "compare")
    page.screenshot(path=str(artifacts / "compare.png"))
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone.goto(page.url)
    check_a11y(phone, "phone compare")


@pytest.mark.slow
def test_the_new_job_form_with_the_keyboard_alone(services, ui_server, browser):
    services.datasets.create("facts", str(DEMO_DATA / "sft.jsonl"), "sft")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(ui_server.url + "/jobs/new")

    def tab_to(name: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("() => (document.activeElement.textContent || '').trim()") == name:
                return
        pytest.fail(f"Tab never reached {name!r}")

    for _ in range(80):                              # to the dataset select, then pick facts@v1 by typing
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "dataset":
            break
    page.keyboard.type("facts@")
    assert page.evaluate("() => document.activeElement.value") == "facts@v1"
    tab_to("Review the plan")
    page.keyboard.press("Enter")
    page.wait_for_selector("section.plan")
    assert "--dataset facts@v1" in page.locator("#command").inner_text()
    tab_to("Start this job")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/jobs/default-[^/?]+\?outcome=submitted$"))
    assert "Submitted" in page.get_by_role("status").inner_text()
    tab_to("Cancel job")
    page.keyboard.press("Enter")
    page.wait_for_function("() => /cancelled/.test(document.getElementById('job-state').textContent)")


def test_a_live_long_curve_is_redrawn_downsampled(services, ui_server, browser):
    from tuneloop.ui.charts import BUCKETS

    store = services.store
    fake_job(store, "default-sft-live", steps=2_000, state="running")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(ui_server.url + "/jobs/default-sft-live")
    store.add_event("default-sft-live", "", type="metrics", data={"step": 2_001, "loss": 5.0, "learning_rate": 1e-5})
    page.wait_for_function("() => /at step 2001/.test(document.querySelector('.panel[data-metric=\"loss\"] .last')"
                           ".textContent)", timeout=30_000)
    panel = page.locator('.panel[data-metric="loss"]')
    assert len(panel.locator("polyline").get_attribute("points").split()) == BUCKETS
    band = panel.locator("polygon.band").get_attribute("points").split()
    assert len(band) == 2 * BUCKETS and min(float(p.split(",")[1]) for p in band) == 8.0   # the new 5.0 tops it
    assert "max 5" in panel.inner_text()
    store.update_job("default-sft-live", state="cancelled")
