"""Hostile requests against the real Flask site over a socket: never a 5xx, and the API always answers JSON
with a message. Seeded and bounded (a few hundred requests, seconds on the tiny bundle).

Each case is built from a fixed list of known-hostile values (lone surrogates, NaN, deep nesting, non-UTF-8
bytes, wrong types, huge numbers) combined at random with a fixed seed, so a failure names a reproducible case.
"""
from __future__ import annotations

import json
import random
import socket

import pytest
import requests
from tests.live_server import serve

from deployment.predictor import Predictor
from flask_app import create_app

SEED = 20240611
N_RANDOM = 220                # random API bodies; the fixed cases come on top
MAX_TEXT_CHARS = 2_000
MAX_BODY_BYTES = 32 * 1024
BIG_INT = "9" * 5000          # beyond Python's 4300-digit int parsing limit

HOSTILE_STRINGS = ["", " ", "\n\t", "a", "\ud800", "ok \udfff end", "\x00", "\x00" * 50, "\u2028\u2029\x85",
                   "\ufeff", "﻿BOM", "🐉" * 30, "x" * (MAX_TEXT_CHARS + 1), "<script>alert(1)</script>",
                   "Ünïcödé «»", "\\u0000", "%ff", "' OR 1=1 --", "\r\n\r\n", "null", "NaN"]
HOSTILE_NUMBERS = [0, 1, -1, 0.5, -0.0, 1.0000001, 1e308, -1e308, 10 ** 30, 2 ** 63, True, False, None,
                   "0.5", "3", [], {}, [0.5], {"v": 1}]
RAW_LITERALS = [b"NaN", b"Infinity", b"-Infinity", BIG_INT.encode(), b"1e99999", b"-0", b"0.0000001"]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "multipart/form-data; boundary=zz", "application/json; charset=latin-1", "application/xml",
                 "", "garbage/garbage; charset=klingon", "application/json; charset=utf-16"]


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON-able value mixing hostile strings and numbers with containers."""
    kind = rng.random()
    if depth > 3 or kind < 0.35:
        return rng.choice(HOSTILE_STRINGS)
    if kind < 0.6:
        return rng.choice(HOSTILE_NUMBERS)
    if kind < 0.8:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["text", "texts", "threshold", "top_k", "extra", ""]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def api_body(rng: random.Random) -> bytes:
    """A request body for /api/predict: mostly plausible shapes with one hostile field, sometimes junk."""
    roll = rng.random()
    if roll < 0.45:
        body: dict = {"text": rng.choice(HOSTILE_STRINGS + ["a dragon story"] * 4)}
    elif roll < 0.7:
        body = {"texts": [rng.choice(HOSTILE_STRINGS + ["a haunted crypt"] * 4) for _ in range(rng.randint(0, 70))]}
    elif roll < 0.85:
        return json.dumps(random_json(rng)).encode()
    else:   # raw bytes: broken JSON, a literal Python's json accepts but JSON does not, random bytes
        junk = [b'{"text": "a", "threshold": ' + rng.choice(RAW_LITERALS) + b"}",
                b'{"text": "a", "top_k": ' + rng.choice(RAW_LITERALS) + b"}",
                b'{"text": ' + rng.choice(RAW_LITERALS) + b"}",
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))),
                b'{"text": "caf\xe9"}', b'{"text": "a"', b"[" * rng.randint(1, 50_000),
                b'{"a":' * 20_000 + b"1" + b"}" * 20_000]
        return rng.choice(junk)
    if rng.random() < 0.5:
        body["threshold"] = rng.choice(HOSTILE_NUMBERS)
    if rng.random() < 0.5:
        body["top_k"] = rng.choice(HOSTILE_NUMBERS)
    if rng.random() < 0.1:
        body[rng.choice(["colour", "Text", "text "])] = 1
    data = json.dumps(body).encode()
    return data.decode().encode("utf-16") if rng.random() < 0.05 else data   # JSON may be UTF-16 (RFC 8259 §8.1)


@pytest.fixture(scope="module")
def base_url(tiny_bundle):
    predictor = Predictor.from_bundle(tiny_bundle)
    app = create_app(tiny_bundle, predictor=predictor, max_text_chars=MAX_TEXT_CHARS, max_body_bytes=MAX_BODY_BYTES)
    with serve(app) as url:
        yield url


def check(r: requests.Response, case: str, problems: list[str]) -> None:
    """No 5xx; JSON with an `error` message for every API/health failure; HTML for every page."""
    if r.status_code >= 500:
        problems.append(f"{r.status_code} for {case}: {r.text[:200]}")
        return
    route = r.url.split("?")[0].split("/", 3)[-1]
    if r.request.method in ("HEAD", "OPTIONS") or (route.startswith("static/") and r.status_code == 200):
        return   # no body (OPTIONS is Flask's automatic Allow answer), or a static file's own type
    if route.startswith(("api/", "healthz")):
        try:
            body = r.json()
        except ValueError:
            problems.append(f"non-JSON answer {r.status_code} for {case}: {r.text[:120]!r}")
            return
        if r.status_code >= 400 and not (isinstance(body.get("error"), str) and body["error"].strip()):
            problems.append(f"{r.status_code} without an error message for {case}: {body}")
        if r.status_code == 200 and r.url.endswith("/api/predict") and not body.get("predictions"):
            problems.append(f"200 without predictions for {case}: {body}")
    elif "text/html" not in r.headers.get("Content-Type", ""):
        problems.append(f"page without HTML for {case}: {r.headers.get('Content-Type')}")


def test_hostile_api_bodies_never_get_a_5xx_and_always_a_json_message(base_url):
    rng = random.Random(SEED)
    problems: list[str] = []
    with requests.Session() as session:
        for i in range(N_RANDOM):
            body = api_body(rng)
            ctype = rng.choice(CONTENT_TYPES)
            r = session.post(base_url + "/api/predict", data=body, headers={"Content-Type": ctype}, timeout=30)
            check(r, f"case {i}: {ctype!r} {body[:80]!r}", problems)
    assert not problems, "\n".join(problems[:20])


def test_hostile_forms_query_strings_methods_and_paths_never_get_a_5xx(base_url):
    rng = random.Random(SEED + 1)
    problems: list[str] = []
    fields = {"text": HOSTILE_STRINGS + ["a dragon story"],
              "threshold": ["", "0.3", "nan", "inf", "-1", "1e-400", "1e400", "0x1", "１", "1_0", "٠.٥", "x" * 500,
                            "0.5\x00", " 0.5 "],
              "sample": ["", "0", "1", "²", "٣", "-1", "9" * 400, " 1", "1.0", "０", "\x00"]}
    cases = []
    for _ in range(90):   # url-encoded and multipart forms with random hostile field values
        form = {k: rng.choice(v) for k, v in fields.items() if rng.random() < 0.8}
        form = {k: v.replace("\ud800", "").replace("\udfff", "") for k, v in form.items()}   # not encodable
        cases.append(("POST", "/", {"data": form}))
        cases.append(("POST", "/", {"files": {k: (None, v) for k, v in form.items()}}))
    raw_forms = [b"text=%FF%FE", b"text=%ED%A0%80", b"text=a&text=b&sample=%C2%B2", b"sample=%C2%B2",
                 b"--zz\r\nContent-Disposition: form-data; name=text\r\n\r\nabc", b"\xff\xfe\x00" * 10, b"=&=&&&="]
    for raw in raw_forms:
        for ctype in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=zz", "text/plain"):
            cases.append(("POST", "/", {"data": raw, "headers": {"Content-Type": ctype}}))
    for path in ["/", "/api/predict", "/healthz", "/static/app.js", "/static/../app.py", "/%ff", "/a" * 2000,
                 "/api/", "/static/%2e%2e/app.py", "/?sample=²", "/healthz?x=%ff%fe"]:
        for method in ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
            cases.append((method, path, {}))
    for _ in range(20):   # query strings and headers are ignored, never a crash
        query = "&".join(f"{rng.choice(['text', 'top_k', '%ff', 'sample'])}={rng.choice(['²', '%00', '%ff%fe', '1e999'])}"
                         for _ in range(rng.randint(1, 5)))
        headers = {"Accept": rng.choice(["*/*", "application/json", "text/html;q=0", "\x7f"]),
                   "Accept-Charset": "klingon", "Content-Encoding": rng.choice(["gzip", "br", "identity"]),
                   "X-Forwarded-For": "::::", "Cookie": "a=" + "b" * 1000}
        cases.append(("POST", "/api/predict?" + query, {"data": b'{"text": "a dragon"}', "headers": headers}))
        cases.append(("POST", "/?" + query, {"data": {"text": "a dragon"}, "headers": headers}))
    with requests.Session() as session:
        for method, path, kwargs in cases:
            r = session.request(method, base_url + path, timeout=30, **kwargs)
            check(r, f"{method} {path[:60]} {str(kwargs)[:100]}", problems)
    assert len(cases) > 250
    assert not problems, "\n".join(problems[:20])


def test_a_request_that_promises_more_body_than_it_sends_gets_an_answer(base_url):
    """A Content-Length larger than the body sent, then a half-close: the server answers (400) instead of a 500."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"text\": ")
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536).decode("latin-1")
    status = int(answer.split()[1])
    assert status == 400, answer[:300]


DISPLAY_KEYS = ["label_display", "label_colors", "metrics", "source_dataset", "created", "backbone", "examples",
                "quantization"]
DISPLAY_VALUES = [None, True, -1, float("nan"), "", "<script>alert(1)</script>", [], {"a": {"b": [1]}},
                  {"Fantasy": "#zzzzzz", "Romance": 5, "Horror": "#00ff00"}, [{"text": 5}, {"text": "t", "labels": "x"}],
                  [{"text": "a sample", "labels": [1, None]}]]


def test_hostile_display_values_in_bundle_json_never_break_a_page(tiny_bundle, tmp_path):
    """The keys the site shows but the predictor ignores: the site starts and every page answers below 500."""
    import logging

    from werkzeug.exceptions import NotFound
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    info = json.loads((tiny_bundle / "bundle.json").read_text())
    predictor = Predictor.from_bundle(tiny_bundle)
    apps, cases = {}, {}
    for key in DISPLAY_KEYS:
        for value in DISPLAY_VALUES:
            name = f"/b{len(apps)}"
            bundle = tmp_path / name.strip("/")
            bundle.mkdir()
            mutated = {**info, key: value, **({"label_display": "colors"} if key == "label_colors" else {})}
            (bundle / "bundle.json").write_text(json.dumps(mutated))
            predictor.info = mutated   # what the site reads from the bundle; the model is the same
            apps[name] = create_app(bundle, predictor=predictor)
            cases[name] = f"{key} = {value!r}"
    predictor.info = info
    problems = []
    logging.getLogger("flask_app.app").disabled = True   # a 500 is reported below, not logged
    try:   # one server, each site mounted under its own prefix
        with serve(DispatcherMiddleware(NotFound(), apps)) as url, requests.Session() as session:
            for name, case in cases.items():
                for method, path, kwargs in [("GET", "/", {}), ("POST", "/", {"data": {"text": "a dragon"}}),
                                             ("POST", "/", {"data": {"text": "", "sample": "0"}}),
                                             ("GET", "/healthz", {}), ("POST", "/api/predict", {"json": {"text": "a"}})]:
                    r = session.request(method, url + name + path, timeout=30, **kwargs)
                    if r.status_code >= 500:
                        problems.append(f"{case}: {method} {path} -> {r.status_code}")
    finally:
        logging.getLogger("flask_app.app").disabled = False
    assert len(cases) == len(DISPLAY_KEYS) * len(DISPLAY_VALUES)
    assert not problems, "\n".join(problems)
