"""The UI in a real headless Chromium (Debian's, driven by Playwright) against `tuneloop ui` as a
subprocess: upload a dataset with an error, see its line, upload the fixed one, plan and start an
SFT job on the built-in model, watch the curve grow without a reload, reload mid-run, see it
complete, find the version in the registry; every page passes the in-page accessibility check
on a laptop and a phone screen, and the job page shows its curves and events without JavaScript."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import DEMO_DATA
from tests.ui.conftest import A11Y

STEPS = 800          # long enough to reload the page mid-run: ~30 s on a quiet 2-core CPU, minutes on a busy one


def points(page, metric: str = "loss") -> int:
    text = page.locator(f'.panel[data-metric="{metric}"] polyline').get_attribute("points") or ""
    return len(text.split())


def check_a11y(page, where: str) -> None:
    assert page.evaluate(A11Y) == [], where


@pytest.mark.slow
def test_upload_plan_train_watch_reload_complete_registry(ui_server, browser, artifacts, tmp_path):
    bad = tmp_path / "facts.jsonl"
    rows = [json.loads(l) for l in (DEMO_DATA / "sft.jsonl").read_text().splitlines() if l.strip()]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + '{"prompt": "left without an answer"}\n'
                   + "".join(json.dumps(r) + "\n" for r in rows[3:]))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(ui_server.url + "/")
    check_a11y(page, "home")
    page.screenshot(path=str(artifacts / "0-home.png"), full_page=True)

    # a dataset with an error: its line and the fix, nothing stored
    page.get_by_role("link", name="Datasets").first.click()
    page.get_by_label("File").set_input_files(str(bad))
    page.get_by_label("Name (lower-case").fill("facts")
    page.get_by_label("Technique it is for").select_option("sft")
    page.get_by_role("button", name="Check and store").click()
    alert = page.get_by_role("alert")
    assert "facts.jsonl:4: missing column 'completion'" in alert.inner_text()
    assert "How to fix it" in alert.inner_text()
    assert "No datasets yet" in page.content()
    check_a11y(page, "datasets with an error")
    page.screenshot(path=str(artifacts / "1-datasets-error.png"), full_page=True)

    # the fixed file
    bad.write_text((DEMO_DATA / "sft.jsonl").read_text())
    page.get_by_label("File").set_input_files(str(bad))
    page.get_by_role("button", name="Check and store").click()
    assert "Stored facts@v1" in page.get_by_role("status").inner_text()
    page.screenshot(path=str(artifacts / "2-datasets-stored.png"), full_page=True)

    # the guided job: model, technique, data, an advanced knob, then the plan before anything starts
    page.get_by_role("link", name="Start a job on facts@v1").click()
    page.get_by_label("Model (catalog and built-ins)").select_option("tuneloop/tiny-qwen3")
    page.get_by_label("Technique", exact=True).select_option("sft")
    page.get_by_label("Registered dataset").select_option("facts@v1")
    page.locator("summary", has_text="Advanced").click()
    page.locator("#hp-max_steps").fill(str(STEPS))
    check_a11y(page, "new job")
    page.get_by_role("button", name="Review the plan").click()
    plan = page.locator("section.plan").inner_text()
    assert "est. peak memory" in plan and "est. time" in plan and f"{STEPS} (" in plan
    assert page.locator("#command").inner_text() == (
        f"tuneloop tune --technique sft --dataset facts@v1 --model tuneloop/tiny-qwen3 --max-steps {STEPS}")
    check_a11y(page, "plan")
    page.screenshot(path=str(artifacts / "3-plan.png"), full_page=True)
    page.get_by_role("button", name="Start this job").click()
    page.wait_for_url(re.compile(r".*/jobs/(?!new)[^/?]+(\?.*)?$"))
    job_url = page.url.split("?")[0]

    # the curve grows from the stream, on the same page (no reload: the marker survives)
    page.evaluate("window.__same_page = true")
    page.wait_for_function("() => (document.querySelector('.panel[data-metric=\"loss\"] polyline')"
                           ".getAttribute('points') || '').trim().split(/\\s+/).length >= 3")
    first = points(page)
    page.wait_for_function(f"() => document.querySelector('.panel[data-metric=\"loss\"] polyline')"
                           f".getAttribute('points').trim().split(/\\s+/).length > {first}")
    assert page.evaluate("window.__same_page") is True
    assert "running" in page.locator("#job-state").inner_text()
    check_a11y(page, "job running")
    page.screenshot(path=str(artifacts / "4-job-running.png"), full_page=True)

    # reload mid-run: the server renders everything so far, then the stream carries on
    seen = points(page)
    page.reload()
    assert "running" in page.locator("#job-state").inner_text(), "the job ended before the reload: raise STEPS"
    assert points(page) >= seen
    assert page.locator("#events li").count() >= 1

    # it completes (the page reloads itself at the stream's end) and is registered
    page.wait_for_selector("#registered", timeout=300_000)
    assert "completed" in page.locator("#job-state").inner_text()
    drawn = points(page)
    assert drawn > seen and f"at step {STEPS}" in page.locator('.panel[data-metric="loss"] .last').inner_text()
    page.screenshot(path=str(artifacts / "5-job-completed.png"), full_page=True)
    page.screenshot(path=str(artifacts / "job.png"))                 # the README's (docs/screenshots/job.png)
    page.get_by_role("link", name="Jobs", exact=True).click()
    assert "completed" in page.locator("tbody tr").first.inner_text()
    check_a11y(page, "jobs")
    page.screenshot(path=str(artifacts / "6-jobs.png"), full_page=True)
    page.get_by_role("link", name="Registry").click()
    row = page.locator("tbody tr").first.inner_text()
    assert "tune-models v1" in row and "tuneloop/tiny-qwen3" in row and job_url.rsplit("/", 1)[1] in row
    check_a11y(page, "registry")
    page.screenshot(path=str(artifacts / "7-registry.png"), full_page=True)
    page.get_by_role("link", name="Playground").click()
    assert "No server is running" in page.content()
    check_a11y(page, "playground")
    page.screenshot(path=str(artifacts / "8-playground.png"), full_page=True)

    # a phone: every page fits the screen and passes the same check
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    for path in ("/", "/datasets", "/jobs/new", "/jobs", job_url.split(ui_server.url, 1)[1], "/registry",
                 "/playground"):
        phone.goto(ui_server.url + path)
        check_a11y(phone, f"phone {path}")
        if path.startswith("/jobs/default-"):
            phone.screenshot(path=str(artifacts / "9-phone-job.png"), full_page=True)

    # before any script runs: the job page without JavaScript holds its curves and events
    context = browser.new_context(java_script_enabled=False)
    plain = context.new_page()
    plain.goto(job_url)
    assert points(plain) == drawn and plain.locator("#events li").count() >= 1
    assert "completed" in plain.locator("#job-state").inner_text()
    context.close()


def test_the_accessibility_check_finds_what_it_looks_for(browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.set_content('<html><body><h1>a</h1><h1>b</h1><input id="q"><label for="ok">ok</label><input id="ok">'
                     '<button></button><img src="x.png"><svg role="img"></svg>'
                     '<div style="width: 2000px">wide</div></body></html>')
    found = page.evaluate(A11Y)
    assert len(found) == 7, found
    for what in ("control without a label", "button without a name", "img without alt", "svg image",
                 "not exactly one h1", "no lang", "wider than the screen"):
        assert any(f.startswith(what) for f in found), (what, found)
