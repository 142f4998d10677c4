"""Corrections through the Flask site over a real socket (werkzeug in a thread), on the tiny bundle and a real
SQLite file (and, for the round trip, a real PostgreSQL server): the JSON API with bearer tokens, the results
page's form with its CSRF token, the operator page, every refused write (a 4xx, nothing stored), the model
version on every answer, and the start-up refusal of an out-of-date schema.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from bs4 import BeautifulSoup
from tests.feedback_helpers import count, fresh_db, migrated, newer_migrations, rows
from tests.live_server import serve

from deployment.predictor import Predictor
from deployment.version import bundle_version
from feedback.__main__ import main as feedback_cli
from flask_app import create_app

ROOT = Path(__file__).resolve().parents[1]
MAX_TEXT_CHARS = 4_000
TEXT = "A young wizard and a dragon set out on a quest to save the kingdom."


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'site.db'}"
    tokens = migrated(url, {"alice": False, "ops": True, "bob": False})
    assert feedback_cli(["tokens", "revoke", "bob", "--db", url]) == 0
    return url, tokens


@pytest.fixture(scope="module")
def site(tiny_bundle, predictor, store):
    app = create_app(tiny_bundle, predictor=predictor, feedback=True, db_url=store[0], max_text_chars=MAX_TEXT_CHARS)
    with serve(app) as url:
        yield url


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def body(text: str = TEXT, labels=("Fantasy",), version: str | None = None, **extra) -> dict:
    return {"text": text, "labels": list(labels), "model_version": version, **extra}


def correction_form(page_html: str) -> dict:
    """The results page's correction form: hidden fields and every label checkbox with its state."""
    form = BeautifulSoup(page_html, "html.parser").find("form", id="correction-form")
    assert form is not None, "no correction form on the results page"
    hidden = {i["name"]: i.get("value", "") for i in form.find_all("input", type="hidden")}
    boxes = {i["value"]: i.has_attr("checked") for i in form.find_all("input", type="checkbox")}
    return {"hidden": hidden, "boxes": boxes, "action": form["action"]}


# ---- the version on every answer ---------------------------------------------------------------------------
def test_every_prediction_and_page_names_the_model_version(site, tiny_bundle, predictor):
    version = bundle_version(tiny_bundle)
    assert predictor.version == version and len(version) == 64
    assert requests.post(site + "/api/predict", json={"text": TEXT}, timeout=10).json()["model_version"] == version
    assert requests.get(site + "/healthz", timeout=10).json()["model_version"] == version
    page = BeautifulSoup(requests.post(site + "/", data={"text": TEXT}, timeout=10).text, "html.parser")
    assert page.find(id="model-version")["title"] == version
    with serve(create_app(tiny_bundle, predictor=predictor)) as plain:   # corrections off: still named
        assert requests.post(plain + "/api/predict", json={"text": TEXT}, timeout=10).json()["model_version"] == version


# ---- the JSON API ------------------------------------------------------------------------------------------
def test_api_correction_is_stored_with_what_the_model_showed(site, store, predictor):
    url, tokens = store
    shown = predictor.predict([TEXT])[0]["predicted"]
    wanted = [x for x in ["Mystery", "Fantasy"] if x not in shown[:1]] or ["Horror"]
    before = count(url)
    r = requests.post(site + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                      json=body(labels=wanted, version=predictor.version, client_ref="note-1",
                                suggested_labels=["Cosy fantasy"]))
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["created"] and answer["model_version"] == predictor.version
    stored = [x for x in rows(url) if x["id"] == answer["id"]][0]
    assert stored["labels"] == [x for x in predictor.labels if x in wanted]          # the model's order
    assert stored["shown"] == shown and stored["face"] == "api" and stored["token_name"] == "alice"
    assert stored["model_version"] == predictor.version and stored["text"] == TEXT
    assert set(answer["changes"]["added"]) == set(wanted) - set(shown)
    assert set(answer["changes"]["removed"]) == set(shown) - set(wanted)
    assert count(url, "label_suggestions") >= 1 and "Cosy fantasy" not in stored["labels"]
    retry = requests.post(site + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                          json=body(labels=wanted, version=predictor.version, client_ref="note-1",
                                    suggested_labels=["Cosy fantasy"]))
    assert retry.status_code == 200 and retry.json()["id"] == answer["id"] and not retry.json()["created"]
    assert count(url) == before + 1


def test_refused_writes_get_a_4xx_with_the_reason_and_store_nothing(site, store, predictor):
    url, tokens = store
    v = predictor.version
    good = json.dumps(body(version=v))
    deep = '{"text": "x", "labels": ' + "[" * 100_000 + "]" * 100_000 + ', "model_version": "v"}'
    cases = [  # (what, headers, raw body, status, fragment of the message)
        ("no token", {}, good, 401, "bearer token is needed"),
        ("unknown token", auth("mltc_" + "x" * 43), good, 401, "not valid"),
        ("revoked token", auth(tokens["bob"]), good, 401, "not valid"),
        ("not a bearer header", {"Authorization": "Basic YWxpY2U6eA=="}, good, 401, "bearer token is needed"),
        ("labels the model lacks", auth(tokens["alice"]),
         json.dumps(body(labels=["Fantasy", "<script>alert(1)</script>", "Cookery"], version=v)), 400, "'Cookery'"),
        ("a label twice", auth(tokens["alice"]), json.dumps(body(labels=["Fantasy", "Fantasy"], version=v)), 400,
         "more than once"),
        ("labels not a list", auth(tokens["alice"]), json.dumps(body(labels="Fantasy", version=v) | {"labels": "Fantasy"}),
         400, "must be a list"),
        ("no model_version", auth(tokens["alice"]), json.dumps({"text": TEXT, "labels": []}), 400, "model_version"),
        ("another model's version", auth(tokens["alice"]), json.dumps(body(version="0" * 64)), 409,
         "not the model this site serves"),
        ("lone surrogate in the text", auth(tokens["alice"]),
         '{"text": "a \\ud800 dragon", "labels": [], "model_version": "%s"}' % v, 400, "lone surrogate"),
        ("lone surrogate in a suggestion", auth(tokens["alice"]),
         '{"text": "a dragon", "labels": [], "model_version": "%s", "suggested_labels": ["x\\udc00"]}' % v, 400,
         "lone surrogates"),
        ("NUL in the text", auth(tokens["alice"]), json.dumps(body(text="a\x00dragon", version=v)), 400, "NUL"),
        ("text over the limit", auth(tokens["alice"]), json.dumps(body(text="a" * (MAX_TEXT_CHARS + 1), version=v)),
         400, "the limit is 4,000"),
        ("empty text", auth(tokens["alice"]), json.dumps(body(text="  ", version=v)), 400, "empty"),
        ("100k-deep JSON", auth(tokens["alice"]), deep, 400, "nested too deeply"),
        ("not JSON", auth(tokens["alice"]), "text=a dragon", 400, "not valid JSON"),
        ("a list body", auth(tokens["alice"]), "[]", 400, "JSON object"),
        ("an unknown field", auth(tokens["alice"]), json.dumps(body(version=v) | {"user": "x"}), 400, "unknown field"),
        ("a model label as a suggestion", auth(tokens["alice"]),
         json.dumps(body(version=v, suggested_labels=["Horror"])), 400, "already a label of the model"),
        ("a client_ref with spaces", auth(tokens["alice"]), json.dumps(body(version=v, client_ref="a b")), 400,
         "client_ref"),
        ("a threshold of 2", auth(tokens["alice"]), json.dumps(body(version=v, threshold=2)), 400, "threshold"),
        ("a body over 2 MiB", auth(tokens["alice"]), json.dumps(body(text="a" * (3 * 2**20), version=v)), 413,
         "too large"),
    ]
    before = count(url), count(url, "label_suggestions")
    for what, headers, raw, status, fragment in cases:
        r = requests.post(site + "/api/feedback", data=raw.encode("utf-8", "surrogatepass"), timeout=30,
                          headers={"Content-Type": "application/json", **headers})
        assert r.status_code == status, (what, r.status_code, r.text[:300])
        assert fragment in r.json()["error"], (what, r.json())
        if status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert (count(url), count(url, "label_suggestions")) == before


def test_the_rate_limit_is_per_client_and_answers_429(tiny_bundle, predictor, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    tokens = migrated(url, {"alice": False, "carol": False})
    monkeypatch.setenv("MLTC_FEEDBACK_RATE", "3/minute")
    app = create_app(tiny_bundle, predictor=predictor, feedback=True, db_url=url)
    with serve(app) as base:
        statuses = [requests.post(base + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                                  json=body(text=f"text {i}", version=predictor.version)).status_code for i in range(4)]
        assert statuses == [201, 201, 201, 429]
        r = requests.post(base + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                          json=body(text="text 9", version=predictor.version))
        assert r.status_code == 429 and "rate limit of 3/minute" in r.json()["error"]
        assert 1 <= int(r.headers["Retry-After"]) <= 61
        assert requests.post(base + "/api/feedback", headers=auth(tokens["carol"]), timeout=10,
                             json=body(version=predictor.version)).status_code == 201
    assert count(url) == 4
    monkeypatch.setenv("MLTC_FEEDBACK_RATE", "lots")
    from flask_app.app import ConfigError
    with pytest.raises(ConfigError, match="MLTC_FEEDBACK_RATE"):
        create_app(tiny_bundle, predictor=predictor, feedback=True, db_url=url)


def test_writes_are_off_unless_the_operator_turns_them_on(tiny_bundle, predictor, tmp_path, monkeypatch):
    monkeypatch.delenv("MLTC_FEEDBACK", raising=False)
    with serve(create_app(tiny_bundle, predictor=predictor)) as base:
        r = requests.post(base + "/api/feedback", json=body(version=predictor.version), timeout=10)
        assert r.status_code == 403 and "corrections are off" in r.json()["error"]
        assert requests.get(base + "/feedback/operator", timeout=10).status_code == 403
        page = requests.post(base + "/", data={"text": TEXT}, timeout=10)
        assert page.status_code == 200 and 'id="correction-form"' not in page.text
    assert not (tmp_path / "feedback.db").exists()
    monkeypatch.setenv("MLTC_FEEDBACK", "maybe")
    from flask_app.app import ConfigError
    with pytest.raises(ConfigError, match="MLTC_FEEDBACK"):
        create_app(tiny_bundle, predictor=predictor)


# ---- the results page's form -------------------------------------------------------------------------------
def test_the_form_saves_with_the_pages_csrf_token_and_not_without(site, store, predictor):
    url, _ = store
    shown = predictor.predict([TEXT])[0]["predicted"]
    with requests.Session() as browser:
        page = browser.post(site + "/", data={"text": TEXT}, timeout=10)
        form = correction_form(page.text)
        assert [label for label, ticked in form["boxes"].items() if ticked] == shown        # predicted: ticked
        assert set(form["boxes"]) == set(predictor.labels)                                # every label offered
        assert form["hidden"]["model_version"] == predictor.version and form["hidden"]["text"] == TEXT
        wanted = [x for x in predictor.labels if x not in shown][:1] + shown[1:]          # drop one, add one
        fields = {**form["hidden"], "labels": wanted, "suggested": "Cosy mystery\n\n"}
        before = count(url)
        refused = [  # (what, session, fields) -> 403, nothing stored
            ("no token", browser, {k: v for k, v in fields.items() if k != "csrf_token"}),
            ("a forged token", browser, {**fields, "csrf_token": fields["csrf_token"][:-4] + "AAAA"}),
            ("another session", requests.Session(), fields),
        ]
        for what, session, data in refused:
            r = session.post(site + form["action"], data=data, timeout=10)
            assert r.status_code == 403 and ("CSRF" in r.text or "session cookie" in r.text), (what, r.text[:300])
        assert count(url) == before
        saved = browser.post(site + form["action"], data=fields, timeout=10)
        assert saved.status_code == 201 and "Correction saved" in saved.text
        as_json = browser.post(site + form["action"], data=fields, headers={"Accept": "application/json"}, timeout=10)
        assert as_json.status_code == 201 and as_json.json()["message"].startswith("Correction saved")
    stored = rows(url)[-2:]
    assert all(r["face"] == "web" and r["token_name"] is None and r["client_key"].startswith("ip:") for r in stored)
    assert all(r["labels"] == [x for x in predictor.labels if x in wanted] and r["shown"] == shown for r in stored)


# ---- operators ---------------------------------------------------------------------------------------------
def test_operator_pages_need_an_operator_token_and_show_stored_text_as_text(site, store, predictor):
    url, tokens = store
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)> a haunted crypt'
    r = requests.post(site + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                      json=body(text=hostile, labels=["Horror"], version=predictor.version,
                                suggested_labels=['<b onmouseover="alert(2)">Gothic</b>']))
    assert r.status_code == 201
    assert requests.get(site + "/api/feedback/stats", timeout=10).status_code == 401
    assert requests.get(site + "/api/feedback/stats", headers=auth(tokens["alice"]), timeout=10).status_code == 403
    stats = requests.get(site + "/api/feedback/stats", headers=auth(tokens["ops"]), timeout=10).json()
    mine = stats["model_versions"][predictor.version]
    assert mine["corrections"] == stats["total"] == count(url)
    assert mine["labels"]["Horror"]["added"] + mine["labels"]["Horror"]["confirmed"] >= 1
    assert stats["suggested_labels"]['<b onmouseover="alert(2)">Gothic</b>'] == 1

    page = requests.get(site + "/feedback/operator", headers=auth(tokens["ops"]), timeout=10)
    assert page.status_code == 200 and page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    main = BeautifulSoup(page.text, "html.parser").find("main")
    assert main.find_all(["script", "img", "b"]) == []                  # stored markup stays text
    assert hostile in main.get_text() and "Gothic" in main.get_text()
    assert requests.get(site + "/feedback/operator", headers=auth(tokens["alice"]), timeout=10).status_code == 403

    with requests.Session() as browser:   # the sign-in form: CSRF token from the page, the token's hash in a cookie
        login = browser.get(site + "/feedback/operator", timeout=10)
        assert login.status_code == 401
        csrf = BeautifulSoup(login.text, "html.parser").find("input", attrs={"name": "csrf_token"})["value"]
        wrong = browser.post(site + "/feedback/operator/login", data={"csrf_token": csrf, "token": tokens["alice"]},
                             timeout=10)
        assert wrong.status_code == 403
        signed_in = browser.post(site + "/feedback/operator/login", data={"csrf_token": csrf, "token": tokens["ops"]},
                                 timeout=10)
        assert signed_in.status_code == 200 and "Signed in as" in signed_in.text
        assert tokens["ops"] not in str(browser.cookies.get_dict())
        browser.post(site + "/feedback/operator/logout", data={"csrf_token": csrf}, timeout=10)
        assert browser.get(site + "/feedback/operator", timeout=10).status_code == 401


# ---- start-up, round trip ----------------------------------------------------------------------------------
def test_the_site_refuses_to_start_on_an_out_of_date_schema(tiny_bundle, tmp_path, monkeypatch, capsys):
    import feedback.schema as schema
    from flask_app.__main__ import main as site_main

    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrated(url)
    revision = schema.head_revision()
    monkeypatch.setattr(schema, "MIGRATIONS", newer_migrations(tmp_path))
    assert site_main(["--bundle", str(tiny_bundle), "--feedback", "--db", url]) == 2
    err = capsys.readouterr().err
    assert "python -m feedback db upgrade" in err and revision in err


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_round_trip_api_and_form_to_export_to_training_prepare(kind, tiny_bundle, predictor, tmp_path, request):
    from tests.tiny_bundle import sample_texts

    url = fresh_db(kind, tmp_path, request)
    tokens = migrated(url, {"alice": False})
    texts, targets = sample_texts(predictor.labels, 10, seed=3)
    with serve(create_app(tiny_bundle, predictor=predictor, feedback=True, db_url=url)) as base:
        for text, labels in zip(texts[:7], targets[:7]):
            r = requests.post(base + "/api/feedback", headers=auth(tokens["alice"]), timeout=10,
                              json=body(text=text, labels=labels, version=predictor.version))
            assert r.status_code == 201, r.text
        with requests.Session() as browser:
            for text, labels in zip(texts[7:], targets[7:]):
                form = correction_form(browser.post(base + "/", data={"text": text}, timeout=10).text)
                r = browser.post(base + form["action"], data={**form["hidden"], "labels": labels}, timeout=10)
                assert r.status_code == 201, r.text
    out = tmp_path / "corrections.jsonl"
    assert feedback_cli(["export", "--out", str(out), "--db", url, "--quiet"]) == 0
    processed = tmp_path / "processed"
    proc = subprocess.run([sys.executable, "-m", "training.prepare", "--input", str(out), "--out", str(processed),
                           "--min-label-freq", "1", "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    dataset = pd.read_csv(processed / "dataset.csv", dtype=str, keep_default_na=False)
    got = {t: json.loads(labels) for t, labels in zip(dataset["text"], dataset["labels"])}
    assert len(got) == 10
    for text, labels in zip(texts, targets):
        assert sorted(got[text]) == sorted(labels)
