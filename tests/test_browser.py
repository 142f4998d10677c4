"""A real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) using the Flask site.

No `playwright install`: the browser is the system one. Screenshots go to test-artifacts/ (git-ignored) for
a person to look at. Without chromium the tests skip with the reason, or fail under CI=true (conftest.require).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from playwright import sync_api
from tests.ci import require
from tests.live_server import serve
from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

from flask_app import create_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    require(CHROMIUM.exists(), f"{CHROMIUM} not found: install Debian's chromium (make system-deps, or "
                               "apt-get install -y chromium) to run the browser tests")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.problems = []   # console errors and CSP violations: the page must load cleanly under its own CSP
    page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: page.problems.append(str(err)))
    yield page
    context.close()


def test_click_a_sample_submit_and_see_label_chips(page, tiny_bundle):
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(create_app(tiny_bundle)) as url:
        page.goto(url + "/")
        page.screenshot(path=str(ARTIFACTS / "flask_form.png"), full_page=True)
        sample = page.locator("button.sample").first
        sample.click()
        assert page.locator("#text").input_value() == sample.get_attribute("data-text")   # filled, not submitted
        assert page.url.rstrip("/") == url
        page.get_by_role("button", name="Predict labels").first.click()
        page.wait_for_selector("li.chip")
        chips = page.locator("li.chip")
        assert chips.count() >= 1
        assert page.locator("#submitted-text").inner_text() == sample.get_attribute("data-text")
        bar = page.locator("li.chip svg.bar").first.bounding_box()
        assert bar and bar["width"] > 100   # the confidence bars are drawn, not collapsed
        page.screenshot(path=str(ARTIFACTS / "flask_result.png"), full_page=True)
    assert page.problems == []


def test_typed_description_with_markup_is_shown_as_text(page, tiny_bundle):
    with serve(create_app(tiny_bundle)) as url:
        page.goto(url + "/")
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        text = 'A <b>bold</b> dragon <script>alert("xss")</script> and <img src=x onerror=alert(2)> a wizard.'
        page.fill("#text", text)
        page.get_by_role("button", name="Predict labels").first.click()
        page.wait_for_selector("#submitted-text")
        assert page.locator("#submitted-text").inner_text() == text
        assert page.locator("#submitted-text b, #submitted-text script, #submitted-text img").count() == 0
    assert dialogs == []


def test_colour_bundle_renders_swatches(page, tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    palette = ["#e63946", "#2a9d8f", "#264653", "#f4a261", "#8338ec", "#ffbe0b", "#3a86ff"]
    info.update(label_display="colors",
                label_colors={label: palette[i % len(palette)] for i, label in enumerate(info["labels"])})
    (bundle / "bundle.json").write_text(json.dumps(info))
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(create_app(bundle)) as url:
        page.goto(url + "/")
        page.fill("#text", "a colourful text")
        page.locator("details.advanced summary").click()   # the threshold override sits in a <details>
        page.fill("#threshold", "0.3")
        page.get_by_role("button", name="Predict labels").first.click()
        page.wait_for_selector("li.chip")
        assert page.locator("li.chip svg.swatch").count() == page.locator("li.chip").count()
        page.screenshot(path=str(ARTIFACTS / "flask_result_colors.png"), full_page=True)
    assert page.problems == []


def test_results_page_highlights_the_evidence_for_each_predicted_label(page, tmp_path):
    """A blended tiny bundle (its linear part knows genre words): the form's "Highlight why" box is ticked by
    default, the results page marks each predicted label's sentence in its own colour, with a legend, and the
    highlights are reachable from the keyboard and named for screen readers."""
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, with_linear=True, bench_rounds=0)
    fantasy = "A young wizard must find the dragon's sword and save the kingdom."
    crime = "Inspector Hale suspects everyone in the village of the murder."
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(create_app(bundle)) as url:
        page.goto(url + "/")
        assert page.locator("input[name=explain]").is_checked()
        page.fill("#text", f"{fantasy} {crime} <b>Markup</b> stays text.")
        page.locator("details.advanced summary").click()
        page.fill("#threshold", "0.3")
        page.get_by_role("button", name="Predict labels").first.click()
        page.wait_for_selector("#submitted-text mark")
        assert page.locator("#submitted-text").inner_text() == f"{fantasy} {crime} <b>Markup</b> stays text."
        legend = page.locator("#evidence-legend li")
        assert legend.count() >= 2
        names = {legend.nth(i).get_attribute("id"): legend.nth(i).text_content().removeprefix("Evidence for ")
                 for i in range(legend.count())}
        marks = page.locator("#submitted-text mark")
        described = {}
        for i in range(marks.count()):
            for ref in marks.nth(i).get_attribute("aria-describedby").split():
                described.setdefault(names[ref], []).append(marks.nth(i).inner_text())
        assert fantasy in described["Fantasy"] and crime in described["Mystery"]
        first = marks.first
        colour = first.evaluate("m => getComputedStyle(m).backgroundColor")
        assert colour not in ("rgba(0, 0, 0, 0)", "transparent")   # the stylesheet's class colours apply
        page.locator("#text").last.focus()
        for _ in range(60):   # Tab through the page until a highlight has the focus
            if page.evaluate("document.activeElement.tagName") == "MARK":
                break
            page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.tagName") == "MARK"
        page.locator("#submitted-text").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "flask_result_explain.png"), full_page=True)
    assert page.problems == []
