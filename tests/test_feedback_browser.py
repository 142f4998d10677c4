"""A real headless Chromium (tests/test_browser.py's setup) correcting a prediction on the results page: untick a
predicted label, tick a missing one, "Save correction"; the page says it was saved without leaving the page,
under the site's strict CSP (no console errors), and the database holds exactly the ticked set."""
from __future__ import annotations

import pytest
from tests.feedback_helpers import migrated, rows
from tests.live_server import serve
from tests.test_browser import ARTIFACTS, browser, page  # noqa: F401  (fixtures)

from flask_app import create_app

pytestmark = pytest.mark.browser


def test_the_correction_form_saves_in_place_and_says_so(page, tiny_bundle, tmp_path):  # noqa: F811
    url = f"sqlite:///{tmp_path / 'browser.db'}"
    migrated(url)
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(create_app(tiny_bundle, feedback=True, db_url=url)) as base:
        page.goto(base + "/")
        page.fill("#text", "A haunted crypt, a ghost and a detective in the village.")
        page.locator("details.advanced summary").click()
        page.fill("#threshold", "0.5")
        page.get_by_role("button", name="Predict labels").first.click()
        page.wait_for_selector("#correction-form")
        predicted = page.locator("#correction-predicted input[type=checkbox]")
        candidates = page.locator("#correction-candidates input[type=checkbox]")
        ticked = {predicted.nth(i).get_attribute("value") for i in range(predicted.count())}
        assert all(predicted.nth(i).is_checked() for i in range(predicted.count()))
        if ticked:                                   # remove one predicted label ...
            first = predicted.first
            ticked.discard(first.get_attribute("value"))
            first.uncheck()
        added = candidates.first.get_attribute("value")   # ... and add a candidate below its threshold
        candidates.first.check()
        ticked.add(added)
        results_url = page.url
        page.get_by_role("button", name="Save correction").click()
        status = page.locator("#correction-status")
        status.filter(has_text="Correction saved").wait_for(timeout=15_000)
        assert page.url == results_url               # saved in place (static/correction.js), no navigation
        page.locator("#correction-form").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "flask_correction.png"), full_page=True)
    assert page.problems == []                       # the script loads and runs under the strict CSP
    stored = rows(url)
    assert len(stored) == 1 and set(stored[0]["labels"]) == ticked and stored[0]["face"] == "web"
