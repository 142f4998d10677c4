"""The Gradio app launched for real on a local port (without blocking) and queried with gradio_client.

One launch per module: `import gradio` and the launch take seconds on these machines.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import socket
from pathlib import Path

import gradio_client
import pytest
import requests

from deployment.app import App, build_demo, launch, main, predicted_html
from deployment.predict import OUT_FIELDS
from deployment.predictor import Predictor

LONG_TEXT = " ".join(["dragon wizard kingdom quest"] * 60)   # far over the tiny model's 64 tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def app_url(tiny_bundle):
    demo = build_demo(tiny_bundle)
    _, url, _ = launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    return gradio_client.Client(app_url, verbose=False)


def call_raw(url: str, endpoint: str, body: bytes) -> tuple[int, str, dict | None]:
    """POST a raw JSON body to Gradio's HTTP API and read the event stream: (status, event name, its data).

    Raw, not gradio_client: the client cannot send what a hostile caller can (a lone surrogate, NaN, a string
    where the slider's number goes)."""
    r = requests.post(f"{url}gradio_api/call/{endpoint}", data=body, headers={"Content-Type": "application/json"},
                      timeout=30)
    if r.status_code != 200:
        return r.status_code, "", None
    stream = requests.get(f"{url}gradio_api/call/{endpoint}/{r.json()['event_id']}", timeout=30)
    event = re.search(r"^event: (\w+)$", stream.text, re.M).group(1)
    data = re.search(r"^data: (.*)$", stream.text, re.M).group(1)
    return stream.status_code, event, json.loads(data)


def confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def test_predict_endpoint_returns_the_predictors_scores_and_labels(client, predictor):
    text = "A young wizard and a dragon set out on a quest."
    chart, chips, notice = client.predict(text, True, 0.5, 3, api_name="/predict")
    expected = predictor.predict([text])[0]
    top3 = {x["label"]: x["score"] for x in expected["labels"][:3]}
    assert confidences(chart) == pytest.approx(top3)
    for label in expected["predicted"]:
        assert f">{label}" in chips
    if not expected["predicted"]:
        assert "No label reached its threshold" in chips
    assert notice == ""


def test_unticking_tuned_thresholds_uses_the_slider_value(client, predictor):
    text = "love letters over one summer"
    _, chips_all, _ = client.predict(text, False, 0.0, 2, api_name="/predict")
    assert all(f">{label}" in chips_all for label in predictor.labels)   # threshold 0: every label passes
    _, chips_none, _ = client.predict(text, False, 1.0, 2, api_name="/predict")
    assert "No label reached its threshold" in chips_none
    _, chips_tuned, _ = client.predict(text, True, 1.0, 2, api_name="/predict")   # slider ignored when ticked
    assert ("No label" in chips_tuned) == (not predictor.predict([text])[0]["predicted"])


def test_explain_endpoint_highlights_the_predicted_labels_evidence(client, predictor):
    text = "A young wizard must find the dragon's sword. Inspector Hale suspects everyone of the murder!"
    out = client.predict(text, False, 0.0, True, api_name="/explain")   # threshold 0: every label predicted
    tokens = out["value"]
    assert "".join(t["token"] for t in tokens) == text
    expected = predictor.predict([text], threshold=0.0, explain=True)[0]
    strongest = {x["label"]: [e["text"] for e in x["evidence"] if e["weight"] > 0][:3] for x in expected["labels"]}
    tagged = [t for t in tokens if t["class_or_confidence"]]
    assert tagged, tokens
    for t in tagged:
        for label in t["class_or_confidence"].split(" + "):
            assert any(t["token"] in span for span in strongest[label])
        assert out["color_map"][t["class_or_confidence"]].startswith("#")
    assert client.predict(text, False, 0.0, False, api_name="/explain")["value"] is None   # box unticked


def test_long_text_gets_a_truncation_notice(client):
    _, _, notice = client.predict(LONG_TEXT, True, 0.5, 3, api_name="/predict")
    assert "the part that fits" in notice


def test_empty_text_is_an_error_message_not_a_crash(client):
    with pytest.raises(gradio_client.exceptions.AppError, match="The text is empty or whitespace only"):
        client.predict("   ", True, 0.5, 3, api_name="/predict")


@pytest.mark.parametrize("data,fragment", [
    ('["\\ud800 a lone surrogate", true, 0.5, 3]', "lone surrogate (U+D800"),
    ('["ok", false, NaN, 3]', "One threshold for every label: expected a finite number"),
    ('["ok", false, "0.5", 3]', "One threshold for every label: expected a finite number"),
    ('["ok", true, 0.5, Infinity]', "Labels in the chart (top-k): expected a finite number"),
    ('["ok", true, 0.5, "x"]', "Labels in the chart (top-k): expected a finite number"),
    ('["ok", "no", 0.5, 3]', "Use the tuned per-label thresholds: expected true or false"),
    ('["ok", true, 0.5, 999]', "greater than maximum"),
    ('[null, true, 0.5, 3]', "The text is empty or whitespace only; there is nothing to classify."),
    ('["' + "x" * 20_001 + '", true, 0.5, 3]', "The text is 20,001 characters long; the limit is 20,000."),
])
def test_malformed_api_values_get_an_error_event_with_a_message(app_url, data, fragment):
    status, event, payload = call_raw(app_url, "predict", b'{"data": ' + data.encode() + b"}")
    assert (status, event) == (200, "error")
    assert fragment in payload["error"]


@pytest.mark.parametrize("data,fragment", [
    ('["ok", true, 0.5, "yes"]', "Highlight why: expected true or false"),
    ('["\\ud800 a lone surrogate", true, 0.5, true]', "lone surrogate (U+D800"),
])
def test_malformed_explain_values_get_an_error_event_with_a_message(app_url, data, fragment):
    status, event, payload = call_raw(app_url, "explain", b'{"data": ' + data.encode() + b"}")
    assert (status, event) == (200, "error")
    assert fragment in payload["error"]


@pytest.mark.parametrize("body,expected", [
    (b'{"data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),   # Gradio's parser: unreadable JSON
    (b"\xff\xfe{", 400),
    (b"[1, 2]", 422),                                            # valid JSON of the wrong shape
    (b'{"data": "not a list"}', 422),
])
def test_unreadable_api_bodies_get_a_4xx_not_a_500(app_url, body, expected):
    status, _, _ = call_raw(app_url, "predict", body)
    assert status == expected


def test_batch_csv_comes_back_with_predictions(client, predictor, tmp_path):
    rows = [("1", "a haunted crypt at night"), ("2", ""), ("3", 'quotes "inside", and commas'), ("4", LONG_TEXT)]
    src = tmp_path / "books.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("id", "text"), *rows])
    out_path, preview, summary = client.predict(gradio_client.handle_file(str(src)), True, 0.5, 3,
                                                api_name="/predict_csv")
    with open(out_path, newline="", encoding="utf-8") as fh:
        out = list(csv.DictReader(fh))
    assert [(r["id"], r["text"]) for r in out] == rows
    assert list(out[0]) == ["id", "text", *OUT_FIELDS]   # the batch CLI's columns: one batch path
    assert out[1]["predicted_labels"] == "[]" and out[1]["error"] == "empty text"   # kept, flagged, not predicted
    # Compared with the same texts predicted in one call, as the app batches them: int8 dynamic quantisation
    # picks activation ranges per batch, so a text's scores shift slightly with its batch-mates.
    batch = [out[0], out[2], out[3]]
    for row, expected in zip(batch, predictor.predict([r["text"] for r in batch], top_k=3)):
        assert json.loads(row["predicted_labels"]) == expected["predicted"]
        assert list(json.loads(row["scores"])) == [x["label"] for x in expected["labels"]]
    assert out[3]["truncated"] == "true" and out[0]["truncated"] == "false"
    assert "Predicted 3 of 4 rows (1 with an error: see the error column)" in summary
    assert "1 texts were longer" in summary
    assert len(preview["data"]) == 4


@pytest.mark.parametrize("content,fragment", [
    ("id,body\n1,hello\n", "The CSV cannot be used: bad.csv: no 'text' column (columns: ['id', 'body'])"),
    ("", "The CSV cannot be used: bad.csv: no 'text' column"),
    (b"text\n\xff\xfe broken\n", "bad.csv: not UTF-8"),
    ("id,text,id\n1,a,2\n", "the header repeats column name(s) 'id'"),
    ("text,scores\na,{}\n", "has field(s) ['scores'] that the output adds"),
])
def test_batch_csv_errors_are_clear(client, tmp_path, content, fragment):
    src = tmp_path / "bad.csv"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(gradio_client.exceptions.AppError, match=re.escape(fragment)):
        client.predict(gradio_client.handle_file(str(src)), True, 0.5, 3, api_name="/predict_csv")


def test_colour_bundles_show_swatches(predictor):
    pred = {"labels": [{"label": "<b>Red</b>", "score": 0.9, "threshold": 0.5, "predicted": True}],
            "predicted": ["<b>Red</b>"], "truncated": False, "n_tokens": 3}
    html = predicted_html(pred, {"<b>Red</b>": "#ff0000"})
    assert 'style="background:#ff0000"' in html and "&lt;b&gt;Red&lt;/b&gt;" in html and "<b>" not in html


def test_colour_display_is_read_from_bundle_json(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    info = json.loads((bundle / "bundle.json").read_text())
    colors = {label: "#1a2b3c" for label in info["labels"]}
    colors[info["labels"][0]] = "javascript:alert(1)"
    info.update(label_display="colors", label_colors=colors)
    (bundle / "bundle.json").write_text(json.dumps(info))
    app = App(Predictor.from_bundle(bundle), bundle)
    _, chips, _ = app.predict("anything", False, 0.0, 3)
    assert chips.count("mltc-swatch") == len(info["labels"]) - 1 and "javascript" not in chips


def test_missing_bundle_exits_with_a_message(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def wait_for_http(url: str, proc, seconds: float = 90):
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, f"{url} did not answer within {seconds:.0f} s"
            time.sleep(0.5)


def test_python_m_deployment_app_serves_the_ui_as_a_user_starts_it(tiny_bundle):
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deployment.app", "--bundle", str(tiny_bundle), "--port", str(port),
                             "--threads", "1"], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/", proc).status_code == 200
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        chart, chips, _ = client.predict("a dragon and a wizard", True, 0.5, 2, api_name="/predict")
        assert len(chart["confidences"]) == 2 and "Predicted labels" in chips
        status, event, payload = call_raw(f"http://127.0.0.1:{port}/", "predict", b'{"data": ["\\ud800", true, 0.5, 2]}')
        assert (status, event) == (200, "error") and "lone surrogate" in payload["error"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Traceback" not in output


def test_a_bad_number_for_the_gradio_app_stops_it_at_the_parser(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "deployment.app", "--bundle", str(tmp_path / "no-bundle"), "--port",
                           "0"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "argument --port: must be an integer from 1 to 65535, got '0'" in proc.stderr
    assert "no-bundle" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_thread_count_of_the_gradio_app_is_checked_at_the_parser(tmp_path, capsys):
    from deployment.app import main
    from tests.cases import parser_refuses

    parser_refuses(main, ["--bundle", str(tmp_path / "no-bundle"), "--threads", "0"],
                   "argument --threads: must be an integer >= 1, got '0'", capsys)


def test_a_bad_port_in_the_environment_is_one_line_not_gradios_traceback(tmp_path):
    """Gradio reads $GRADIO_SERVER_PORT when it is imported: only a fresh process shows the check before it."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "deployment.app", "--bundle", str(tmp_path / "no-bundle")],
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "GRADIO_SERVER_PORT": "http"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "$GRADIO_SERVER_PORT must be an integer from 1 to 65535, got 'http'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_deployment_folder_runs_as_a_space(tiny_bundle, tmp_path):
    """The Space layout: app.py run as a script from a copy of the folder, bundle in ./bundle, no repo on the path."""
    import os
    import subprocess
    import sys
    import time

    import requests

    deployment = Path(__file__).resolve().parents[1] / "deployment"
    space = tmp_path / "space"
    space.mkdir()
    for name in ("app.py", "predictor.py", "encoding.py", "scoring.py", "explain.py", "predict.py", "examples.py",
                 "cli_types.py", "web.py", "files.py", "version.py", "examples.json",
                 "requirements.txt", "README.md"):
        shutil.copy(deployment / name, space / name)
    shutil.copytree(tiny_bundle, space / "bundle")
    lines = (space / "requirements.txt").read_text().lower().splitlines()
    packages = {re.split(r"[=<>~!\[ ]", line.strip())[0] for line in lines if line.strip() and not line.startswith("#")}
    assert packages == {"gradio", "onnxruntime", "tokenizers", "numpy"}
    assert (space / "README.md").read_text().startswith("---\ntitle:")   # the Space's YAML header
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADIO_ANALYTICS_ENABLED")}
    env.update(GRADIO_SERVER_PORT=str(port), PYTHONPATH="")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the Space app did not answer within 90 s"
                time.sleep(0.5)
        assert r.status_code == 200
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        chart, _, _ = client.predict("a dragon and a wizard", True, 0.5, 2, api_name="/predict")
        assert len(chart["confidences"]) == 2
        why = client.predict("A dragon. A wizard.", False, 0.0, True, api_name="/explain")
        assert "".join(t["token"] for t in why["value"]) == "A dragon. A wizard."
    finally:
        proc.terminate()
        proc.wait(timeout=30)
