"""The Flask site and JSON API over a real socket (werkzeug server in a thread), on the tiny bundle.

Covers the happy path, every bad-input case (never a 500), escaping, security headers, the colour display,
startup errors, the gunicorn command from the README, and 8 concurrent clients x 50 requests.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from bs4 import BeautifulSoup
from tests.ci import require
from tests.live_server import serve

from deployment.predictor import BundleError, Predictor
from flask_app import create_app

ROOT = Path(__file__).resolve().parents[1]
MAX_TEXT_CHARS = 4_000          # small limits so the over-limit cases are cheap to send
MAX_BODY_BYTES = 64 * 1024
LONG_TEXT = " ".join(["dragon wizard kingdom quest"] * 60)   # ~240 words: far over the tiny model's 64 tokens
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def base_url(tiny_bundle, predictor):
    app = create_app(tiny_bundle, predictor=predictor, max_text_chars=MAX_TEXT_CHARS, max_body_bytes=MAX_BODY_BYTES)
    with serve(app) as url:
        yield url


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def chip_labels(page: BeautifulSoup, section_id: str) -> list[str]:
    section = page.find(id=section_id)
    return [li["data-label"] for li in section.find_all("li")] if section else []


# ---- pages ------------------------------------------------------------------------------------------------
def test_form_page_has_textarea_and_one_click_examples(base_url):
    r = requests.get(base_url + "/", timeout=10)
    assert r.status_code == 200
    page = soup(r)
    assert page.find("textarea", attrs={"name": "text"}) is not None
    samples = page.select("button.sample")
    assert samples and all(b["data-text"].strip() for b in samples)
    assert "Examples" in page.find("section", class_="examples").get_text()


def test_results_page_shows_the_predictors_labels_as_chips(base_url, predictor):
    text = "A young wizard and a dragon set out on a quest to save the kingdom."
    r = requests.post(base_url + "/", data={"text": text}, timeout=10)
    assert r.status_code == 200
    page = soup(r)
    expected = predictor.predict([text])[0]
    assert chip_labels(page, "predicted") == expected["predicted"]
    candidates = chip_labels(page, "candidates")
    assert candidates == [x["label"] for x in expected["labels"] if not x["predicted"]][:5]
    assert page.find(id="submitted-text").get_text() == text
    assert "tuned per label" in page.find(class_="threshold-used").get_text()
    for chip in page.select("#predicted li.chip"):   # every chip has a bar with its score and threshold marker
        assert chip.find("rect", class_="bar-fill") is not None and chip.find("line", class_="bar-threshold")


def test_threshold_override_applies_to_every_label(base_url, predictor):
    r = requests.post(base_url + "/", data={"text": "a quiet story", "threshold": "0"}, timeout=10)
    assert r.status_code == 200
    page = soup(r)
    assert sorted(chip_labels(page, "predicted")) == sorted(predictor.labels)
    assert "for every label" in page.find(class_="threshold-used").get_text()


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_shows_the_form_again_with_a_message(base_url, text):
    r = requests.post(base_url + "/", data={"text": text}, timeout=10)
    assert r.status_code == 400
    page = soup(r)
    assert "empty" in page.find(class_="message").get_text()
    assert page.find("textarea", attrs={"name": "text"}) is not None


@pytest.mark.parametrize("body,content_type,status", [
    (b"text=%FF%FEhello+dragon", "application/x-www-form-urlencoded", 200),   # werkzeug keeps the escapes as text
    (b"text=\xff\xfe raw bytes", "application/x-www-form-urlencoded", 400),  # undecodable field: dropped, "empty"
    (b"--x\r\ngarbage", "multipart/form-data; boundary=x", 400),
    (b"garbage", "multipart/form-data", 400),
    (b"text=a%00b", "application/x-www-form-urlencoded", 200),
])
def test_malformed_form_bodies_never_give_a_500(base_url, body, content_type, status):
    r = requests.post(base_url + "/", data=body, headers={"Content-Type": content_type}, timeout=10)
    assert r.status_code == status
    assert "text/html" in r.headers["Content-Type"]
    if status == 400:
        assert "empty" in soup(r).find(class_="message").get_text()


def test_bad_threshold_in_the_form_keeps_the_text(base_url):
    r = requests.post(base_url + "/", data={"text": "keep me", "threshold": "lots"}, timeout=10)
    assert r.status_code == 400
    page = soup(r)
    assert "threshold" in page.find(class_="message").get_text()
    assert page.find("textarea").get_text() == "keep me"


@pytest.mark.parametrize("sample", ["²", "٣", "-1", "99", "9" * 400, "1.0", " 0"])
def test_a_sample_index_that_is_not_one_gets_the_form_back_with_a_message(base_url, sample):
    """ "²".isdigit() is true but int("²") raises: only plain ASCII digits naming an example count."""
    r = requests.post(base_url + "/", data={"text": "", "sample": sample}, timeout=10)
    assert r.status_code == 400
    assert "there is no sample" in soup(r).find(class_="message").get_text()


def test_a_sample_index_beside_a_typed_text_is_ignored(base_url, predictor):
    r = requests.post(base_url + "/", data={"text": "a haunted crypt", "sample": "²"}, timeout=10)
    assert r.status_code == 200
    assert chip_labels(soup(r), "predicted") == predictor.predict(["a haunted crypt"])[0]["predicted"]


def test_sample_button_without_javascript_predicts_that_sample(base_url):
    first = soup(requests.get(base_url + "/", timeout=10)).select("button.sample")[0]["data-text"]
    r = requests.post(base_url + "/", data={"text": "", "sample": "0"}, timeout=10)
    assert r.status_code == 200
    assert soup(r).find(id="submitted-text").get_text() == first
    known = soup(r).find(id="known-labels")   # the tiny bundle's examples are test texts with true labels
    assert known is not None and known.find_all("span", class_="tag")


def test_script_tags_come_back_inert(base_url):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)> "quotes" & ampersands'
    r = requests.post(base_url + "/", data={"text": evil}, timeout=10)
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert" in r.text
    assert soup(r).find(id="submitted-text").get_text() == evil   # shown verbatim, as text
    api = requests.post(base_url + "/api/predict", json={"text": evil}, timeout=10)
    assert api.status_code == 200 and api.headers["Content-Type"].startswith("application/json")


# ---- evidence highlights ---------------------------------------------------------------------------------
TWO_TOPICS = "A young wizard must find the dragon's sword. Inspector Hale suspects everyone of the murder!"


def test_the_form_offers_highlights_ticked_and_a_post_without_the_box_has_none(base_url):
    box = soup(requests.get(base_url + "/", timeout=10)).find("input", attrs={"name": "explain"})
    assert box["type"] == "checkbox" and box.has_attr("checked")
    page = soup(requests.post(base_url + "/", data={"text": TWO_TOPICS, "threshold": "0"}, timeout=10))
    assert page.find(id="submitted-text").find("mark") is None and page.find(id="evidence-legend") is None
    assert not page.find("input", attrs={"name": "explain"}).has_attr("checked")   # the form keeps the choice


def test_results_page_highlights_each_predicted_labels_evidence(base_url, predictor):
    r = requests.post(base_url + "/", data={"text": TWO_TOPICS, "threshold": "0", "explain": "1"}, timeout=10)
    assert r.status_code == 200
    page = soup(r)
    expected = predictor.predict([TWO_TOPICS], threshold=0.0, explain=True)[0]
    quote = page.find(id="submitted-text")
    assert quote.get_text() == TWO_TOPICS                        # the marks hold the text itself, nothing added
    legend = {li["id"]: li.get_text() for li in page.select("#evidence-legend li")}
    marked = {x["label"]: x for x in expected["labels"] if any(e["weight"] > 0 for e in x["evidence"])}
    assert sorted(legend.values()) == sorted(f"Evidence for {label}" for label in marked)
    marks = quote.find_all("mark")
    assert marks and all(m["tabindex"] == "0" for m in marks)     # keyboard-focusable
    for mark in marks:
        ids = mark["aria-describedby"].split()
        assert ids and set(ids) <= set(legend)                   # screen readers hear "Evidence for <label>"
        for i in ids:
            label = legend[i].removeprefix("Evidence for ")
            spans = [e for e in marked[label]["evidence"] if e["weight"] > 0][:3]
            assert any(mark.get_text() in e["text"] for e in spans) and f"Evidence for {label} (+" in mark["title"]
        assert any(c.startswith("ev-") for c in mark["class"])
    assert not page.find_all(style=True) and not page.find_all("style")   # colours come from classes (CSP)


def test_api_explain_returns_the_predictors_evidence(base_url, predictor):
    texts = [TWO_TOPICS, "love letters over one summer"]
    r = requests.post(base_url + "/api/predict", json={"texts": texts, "explain": True, "top_k": 2}, timeout=10)
    assert r.status_code == 200
    assert r.json()["predictions"] == predictor.predict(texts, top_k=2, explain=True)
    plain = requests.post(base_url + "/api/predict", json={"texts": texts, "top_k": 2}, timeout=10)
    for off in (False, None):
        same = requests.post(base_url + "/api/predict", json={"texts": texts, "top_k": 2, "explain": off}, timeout=10)
        assert same.content == plain.content


def test_labels_and_texts_with_markup_stay_inert_in_the_highlights(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    info["labels"] = ['<script>alert("label")</script>', '"><img src=x onerror=alert(1)>', "A & B", "<b>bold</b>",
                      "Plain"]
    (bundle / "bundle.json").write_text(json.dumps(info))
    evil = 'A <script>alert("x")</script> wizard. A <img src=x onerror=alert(1)> murder! "Quotes" & more.'
    with serve(create_app(bundle)) as url:
        r = requests.post(url + "/", data={"text": evil, "threshold": "0", "explain": "1"}, timeout=10)
    assert r.status_code == 200
    page = soup(r)
    assert [s.get("src") for s in page.find_all("script")] == ["/static/app.js"] and not page.find_all("img")
    assert not page.find_all("b")
    assert page.find(id="submitted-text").get_text() == evil
    assert page.find(id="submitted-text").find_all("mark")
    legend = [li.get_text().removeprefix("Evidence for ") for li in page.select("#evidence-legend li")]
    assert legend and set(legend) <= set(info["labels"])
    assert all(m["title"].startswith("Evidence for ") for m in page.select("#submitted-text mark"))


def test_text_longer_than_the_model_reads_is_predicted_with_a_notice(base_url, predictor):
    r = requests.post(base_url + "/", data={"text": LONG_TEXT}, timeout=10)
    assert r.status_code == 200
    page = soup(r)
    assert "longer than the model reads" in page.find(class_="notice").get_text()
    assert chip_labels(page, "predicted") == predictor.predict([LONG_TEXT])[0]["predicted"]


def test_text_over_the_character_limit_is_refused_with_a_message(base_url):
    r = requests.post(base_url + "/", data={"text": "x" * (MAX_TEXT_CHARS + 1)}, timeout=10)
    assert r.status_code == 400
    assert "limit" in soup(r).find(class_="message").get_text()


def test_body_over_the_size_limit_gets_413(base_url):
    r = requests.post(base_url + "/", data={"text": "x" * (MAX_BODY_BYTES + 10)}, timeout=10)
    assert r.status_code == 413
    assert "too large" in r.text
    r = requests.post(base_url + "/api/predict", data=b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}",
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_unknown_route_gets_a_404_page(base_url):
    r = requests.get(base_url + "/no/such/page", timeout=10)
    assert r.status_code == 404 and "text/html" in r.headers["Content-Type"]
    assert "Back to the form" in r.text
    assert requests.get(base_url + "/api/nope", timeout=10).json()["status"] == 404
    assert requests.get(base_url + "/api/predict", timeout=10).status_code == 405


METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "PURGE")


def test_every_route_answers_every_wrong_method_with_405_and_its_allow_header(tiny_bundle, predictor):
    """RFC 9110 §15.5.6: a 405 lists the methods the resource takes; the site's own error page must keep the
    header the routing exception carries (and any other: Retry-After, WWW-Authenticate)."""
    from werkzeug.exceptions import TooManyRequests, Unauthorized
    from werkzeug.datastructures import WWWAuthenticate

    app = create_app(tiny_bundle, predictor=predictor)

    @app.get("/test-only/busy")
    def busy():
        raise TooManyRequests(retry_after=30)

    @app.get("/api/test-only/locked")
    def locked():
        raise Unauthorized(www_authenticate=WWWAuthenticate("Bearer", {"realm": "site"}))

    routes: dict[str, set[str]] = {}   # a path may have a rule per method ("/": the form and the results page)
    for rule in app.url_map.iter_rules():
        routes.setdefault(rule.rule.replace("<path:filename>", "style.css"), set()).update(rule.methods)
    with serve(app) as url:
        checked = 0
        for path, allowed in routes.items():
            assert {"OPTIONS", "HEAD"} <= allowed or "GET" not in allowed, path
            for method in METHODS:
                if method in allowed:
                    continue
                r = requests.request(method, url + path, timeout=10)
                assert r.status_code == 405, (method, path, r.status_code)
                assert set(r.headers.get("Allow", "").replace(" ", "").split(",")) == allowed, (method, path, r.headers)
                assert "Content-Security-Policy" in r.headers
                if method != "HEAD":
                    json_route = path.startswith("/api/") or path == "/healthz"
                    assert ("application/json" in r.headers["Content-Type"]) == json_route, (method, path)
                checked += 1
            if "OPTIONS" in allowed:   # the answer to OPTIONS names the same methods
                r = requests.options(url + path, timeout=10)
                assert set(r.headers["Allow"].replace(" ", "").split(",")) == allowed
        assert checked >= 4 * len(METHODS)
        r = requests.get(url + "/test-only/busy", timeout=10)
        assert r.status_code == 429 and r.headers["Retry-After"] == "30" and "text/html" in r.headers["Content-Type"]
        r = requests.get(url + "/api/test-only/locked", timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer") and r.json()["status"] == 401


def test_json_answers_are_strict_even_when_the_bundle_holds_nan(tiny_bundle, tmp_path):
    """RFC 8259 has no NaN or Infinity: a bundle.json with them (Python's json reads both) must not make the API
    write them; they come out as null."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    info = (bundle / "bundle.json").read_text(encoding="utf-8")
    info = json.loads(info)
    info.update(created=float("nan"), backbone=float("inf"))
    (bundle / "bundle.json").write_text(json.dumps(info), encoding="utf-8")   # bare NaN / Infinity

    def no_constant(name):
        raise ValueError(f"bare {name}")

    with serve(create_app(bundle)) as url:
        answers = [requests.get(url + "/healthz", timeout=10),
                   requests.post(url + "/api/predict", json={"text": "a dragon"}, timeout=10)]
        for r in answers:
            assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
            json.loads(r.text, parse_constant=no_constant)
        assert answers[0].json()["bundle_created"] is None and answers[1].json()["model"]["backbone"] is None


@pytest.mark.parametrize("path,method", [("/", "GET"), ("/", "POST"), ("/healthz", "GET"), ("/nope", "GET"),
                                         ("/api/predict", "POST"), ("/static/style.css", "GET")])
def test_security_headers_are_on_every_response(base_url, path, method):
    r = requests.request(method, base_url + path, data={"text": "hello"}, timeout=10)
    for header in SECURITY_HEADERS:
        assert header in r.headers, header
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"


def test_pages_load_nothing_from_other_hosts(base_url):
    page = soup(requests.post(base_url + "/", data={"text": "hello"}, timeout=10))
    refs = [t.get("src") or t.get("href") for t in page.find_all(["script", "link", "img"])]
    assert refs and all(ref.startswith("/") for ref in refs), refs
    assert not page.find_all(style=True) and not page.find_all("style")   # the CSP forbids inline styles


# ---- JSON API ---------------------------------------------------------------------------------------------
def test_api_single_and_batch_match_in_process_predictions(base_url, predictor):
    texts = ["a haunted crypt at night", "love letters over one summer", LONG_TEXT]
    r = requests.post(base_url + "/api/predict", json={"text": texts[0]}, timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert body["predictions"] == predictor.predict(texts[:1])
    assert body["threshold"] is None and body["warnings"] == []
    r = requests.post(base_url + "/api/predict", json={"texts": texts, "threshold": 0.4, "top_k": 2}, timeout=10)
    body = r.json()
    assert body["predictions"] == predictor.predict(texts, threshold=0.4, top_k=2)
    assert all(len(p["labels"]) == 2 for p in body["predictions"])
    assert body["predictions"][2]["truncated"] and body["warnings"][0].startswith("texts[2]")


@pytest.mark.parametrize("payload,fragment", [
    (b"this is not json", "JSON object"),
    (b"\xff\xfe\x00 not utf-8", "JSON object"),
    (json.dumps(["a list"]).encode(), "JSON object"),
    (json.dumps({}).encode(), "exactly one"),
    (json.dumps({"text": "a", "texts": ["b"]}).encode(), "exactly one"),
    (json.dumps({"text": 5}).encode(), "text is int, expected str"),
    (json.dumps({"text": None}).encode(), "text is NoneType, expected str"),
    (json.dumps({"text": "   "}).encode(), "empty"),
    (json.dumps({"text": "x" * (MAX_TEXT_CHARS + 1)}).encode(), "limit"),
    (json.dumps({"texts": "not a list"}).encode(), "non-empty list"),
    (json.dumps({"texts": []}).encode(), "non-empty list"),
    (json.dumps({"texts": ["ok", 3]}).encode(), "texts[1] is int, expected str"),
    (json.dumps({"texts": ["t"] * 65}).encode(), "limit is 64"),
    (json.dumps({"text": "a", "threshold": 1.5}).encode(), "threshold"),
    (json.dumps({"text": "a", "threshold": "0.5"}).encode(), "threshold"),
    (json.dumps({"text": "a", "threshold": True}).encode(), "threshold"),
    (b'{"text": "a", "threshold": NaN}', "threshold"),
    (json.dumps({"text": "a", "top_k": 0}).encode(), "top_k"),
    (json.dumps({"text": "a", "top_k": 1.5}).encode(), "top_k"),
    (json.dumps({"text": "a", "colour": "red"}).encode(), "unknown field"),
    (json.dumps({"text": "a", "explain": "true"}).encode(), "explain must be true or false, got 'true'"),
    (json.dumps({"text": "a", "explain": 1}).encode(), "explain must be true or false, got 1"),
    (json.dumps({"text": "a", "explain": [True]}).encode(), "explain must be true or false"),
    (b'{"text": "\\ud800"}', "lone surrogate (U+D800 at character 0)"),
    (b'{"texts": ["fine", "also fine \\udfff"]}', "texts[1] holds a lone surrogate (U+DFFF"),
    (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),          # under the 64 KiB test body limit
    (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "nested too deeply"),
    (b'{"text": 1' + b"0" * 5000 + b"}", "number too long"),
    (b'{"text": "a"', "not valid JSON (Expecting"),
])
def test_api_bad_input_gets_400_with_a_json_error(base_url, payload, fragment):
    r = requests.post(base_url + "/api/predict", data=payload, headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_healthz_reports_the_loaded_bundle(base_url, predictor):
    body = requests.get(base_url + "/healthz", timeout=10).json()
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["labels"] == len(predictor.labels)
    assert body["bundle_version"] == predictor.info["format_version"]


# ---- configuration and startup ----------------------------------------------------------------------------
def test_colour_bundles_show_swatches_instead_of_plain_chips(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    palette = ["#e63946", "#2a9d8f", "#264653", "#f4a261", "#8338ec", "#ffbe0b", "#3a86ff"]
    colors = {label: palette[i % len(palette)] for i, label in enumerate(info["labels"])}
    colors[info["labels"][0]] = "red; background:url(x)"   # not #rrggbb: must be dropped, never injected
    info.update(label_display="colors", label_colors=colors)
    (bundle / "bundle.json").write_text(json.dumps(info))
    with serve(create_app(bundle)) as url:
        r = requests.post(url + "/", data={"text": "a text", "threshold": "0"}, timeout=10)
    chips = {li["data-label"]: li for li in soup(r).select("#predicted li")}
    assert set(chips) == set(info["labels"])
    for label, chip in chips.items():
        swatch = chip.find("svg", class_="swatch")
        if label == info["labels"][0]:
            assert swatch is None and "chip-color" not in chip["class"]
        else:
            assert swatch.find("rect")["fill"] == colors[label] and "chip-color" in chip["class"]
    assert "url(x)" not in r.text


def test_missing_bundle_fails_at_startup_naming_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "no-bundle-here"
    with pytest.raises(BundleError, match="no-bundle-here"):
        create_app(missing)
    monkeypatch.setenv("MLTC_BUNDLE", str(missing))
    with pytest.raises(BundleError, match="no-bundle-here"):
        create_app()


def test_bundle_dir_is_read_from_the_environment(tiny_bundle, monkeypatch):
    monkeypatch.setenv("MLTC_BUNDLE", str(tiny_bundle))
    app = create_app()
    assert not app.debug
    assert app.test_client().get("/healthz").json["model_loaded"] is True


def test_cli_with_a_missing_bundle_exits_with_a_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flask_app", "--bundle", str(tmp_path / "nope")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "nope" in r.stderr and "Traceback" not in r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> requests.Response:
    """GET `url` until the server started by `proc` answers; fails with its output if it dies first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds:.0f} s"
            time.sleep(0.3)


def test_python_m_flask_app_serves_the_site_as_a_user_starts_it(tiny_bundle):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flask_app", "--bundle", str(tiny_bundle), "--port", str(port),
                             "--threads", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        assert health.json()["model_loaded"] is True
        page = requests.post(f"http://127.0.0.1:{port}/", data={"text": "a dragon and a wizard"}, timeout=10)
        assert page.status_code == 200 and soup(page).select("#predicted, #candidates")
        api = requests.post(f"http://127.0.0.1:{port}/api/predict", json={"text": "\ud800"}, timeout=10)
        assert api.status_code == 400 and "lone surrogate" in api.json()["error"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"serving {tiny_bundle} at http://127.0.0.1:{port}/" in output and "Traceback" not in output


def test_a_bad_number_for_the_site_stops_it_at_the_parser(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flask_app", "--bundle", str(tmp_path / "no-bundle"), "--port", "70000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "argument --port: must be an integer from 1 to 65535, got '70000'" in r.stderr
    assert "no-bundle" not in r.stderr and "Traceback" not in r.stderr


def test_every_numeric_option_of_the_site_is_checked_at_the_parser(tmp_path, capsys):
    from flask_app.__main__ import main
    from tests.cases import parser_refuses

    for args, message in [(["--port", "http"], "argument --port: must be an integer from 1 to 65535, got 'http'"),
                          (["--threads", "0"], "argument --threads: must be an integer >= 1, got '0'")]:
        parser_refuses(main, ["--bundle", str(tmp_path / "no-bundle"), *args], message, capsys)


@pytest.mark.parametrize("env,fragment", [
    ({"MLTC_THREADS": "0"}, "MLTC_THREADS must be an integer >= 1 (onnxruntime threads per process), got '0'"),
    ({"MLTC_THREADS": "two"}, "got 'two'"),
])
def test_a_bad_thread_count_in_the_environment_stops_the_start_with_a_message(tiny_bundle, env, fragment):
    r = subprocess.run([sys.executable, "-m", "flask_app", "--bundle", str(tiny_bundle)], cwd=ROOT,
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_gunicorn_serves_the_factory_from_the_readme(tiny_bundle):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    require(gunicorn.exists(), f"gunicorn is not installed beside {sys.executable} (requirements.txt has it)")
    port = free_port()
    env = {**os.environ, "MLTC_BUNDLE": str(tiny_bundle), "MLTC_THREADS": "1"}
    proc = subprocess.Popen([str(gunicorn), "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
                             "flask_app:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                break
            except (requests.ConnectionError, requests.Timeout):   # workers still loading the bundle
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
                time.sleep(0.3)
        assert health.json()["model_loaded"] is True
        r = requests.post(f"http://127.0.0.1:{port}/api/predict", json={"text": "a dragon"}, timeout=10)
        assert r.status_code == 200 and r.json()["predictions"][0]["labels"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---- concurrency ------------------------------------------------------------------------------------------
def test_eight_concurrent_clients_get_the_in_process_answers(base_url, predictor):
    clients, per_client = 8, 50
    texts = [f"text {i}: a {w} story" for i, w in enumerate(["dragon", "murder", "love", "robot", "ghost"] * 10)]
    expected = {t: predictor.predict([t])[0] for t in texts}

    def client(c: int) -> list[tuple[str, int, dict]]:
        out = []
        with requests.Session() as session:
            for i in range(per_client):
                text = texts[(c * 7 + i) % len(texts)]
                r = session.post(base_url + "/api/predict", json={"text": text}, timeout=30)
                out.append((text, r.status_code, r.json()))
        return out

    with ThreadPoolExecutor(clients) as pool:   # how fast: bench/serve.py; here only whether every answer is right
        results = [item for chunk in pool.map(client, range(clients)) for item in chunk]
    assert len(results) == clients * per_client
    assert all(status == 200 for _, status, _ in results)
    for text, _, body in results:
        got = body["predictions"][0]
        assert got["predicted"] == expected[text]["predicted"]
        assert [x["label"] for x in got["labels"]] == [x["label"] for x in expected[text]["labels"]]
        assert [x["score"] for x in got["labels"]] == pytest.approx([x["score"] for x in expected[text]["labels"]],
                                                                    abs=1e-6)
