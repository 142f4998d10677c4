"""Evidence spans (deployment/explain.py) and `Predictor.predict(explain=True)` on real int8 bundles: offsets
that always slice the submitted text (fuzzed over random Unicode), the weights as the served blend's drops,
one scoring call per small request (variants in bounded groups when many), the cap on spans for long texts
(forward passes counted), explain=False untouched, and on the fine-tuned sample model (slow) a two-topic text
whose labels point at their own sentences."""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import config
from deployment import explain
from deployment.predictor import InputError, Predictor
from deployment.web import highlights, segments
from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

TWO_TOPICS = ("A young wizard must find the dragon's sword before the kingdom falls. "
              "Inspector Hale suspects everyone in the village of the murder.")
ODD_TEXTS = [
    "Line one.\r\nLine two!\r\n\r\nLine three?",
    "Café crème — déjà vu. Ame\u0301lie smiled; the e\u0301clair was gone.",   # combining acute accents
    "龍が目を覚ました。魔法使いは剣を探す！探偵が来た。",                      # CJK, no spaces
    "👩\u200d👩\u200d👧 family 🇫🇷 flag. 🐉 dragon 👍🏽 ok…  next",            # ZWJ sequences, flags, skin tones
    '<b>bold</b> & <script>alert("x")</script>. <img src=x onerror=alert(2)> wizard.',
    "مرحبا بالعالم. שלום עולם! mixed RTL.",
    "\ufeffBOM first. tab\tinside.\u2028separator line\u2029para \x85nel end",
    "   leading and trailing spaces.   ",
    "no punctuation at all just words going on and on and on",
    "x",
]
ALPHABET = (list("abcdefghij ABC   ....,,;;::!!??—–-()\"'") + ["\r\n", "\n", "\r", "\t", "\u00a0", "\u2028", "\u3000",
            "e\u0301", "\u0301", "🐉", "👩\u200d👧", "🇫🇷", "👍🏽", "龍", "魔", "。", "！", "、", "，", "<b>", "&amp;",
            "…", "”", "»", "\u200b", "\x1c", "\x0b", "\x0c", "ß", "İ", "ﬁ"])


def random_texts(n: int, seed: int) -> list[str]:
    """Random Unicode texts (a seeded stand-in for hypothesis, which the project does not install)."""
    rng = random.Random(seed)
    texts = []
    while len(texts) < n:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 120)))
        if text.strip():
            texts.append(text)
    return texts


def counting_predictor(pred: Predictor) -> tuple[Predictor, list[int]]:
    """The same bundle's predictor with its session wrapped to count the rows (windows) fed to the model."""
    rows: list[int] = []

    class Counting:
        def run(self, names, feeds, *args):
            rows.append(len(feeds["input_ids"]))
            return pred.session.run(names, feeds, *args)

    return Predictor(Counting(), pred.encoder, pred.info, linear=pred.linear, batch_size=pred.batch_size), rows


@pytest.fixture(scope="module")
def pred(tiny_bundle) -> Predictor:
    return Predictor.from_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def linear_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("explain-linear"), TINY_LABELS, seed=1, with_linear=True,
                            with_data=False, bench_rounds=0)


@pytest.fixture(scope="module")
def linear_only_pred(linear_bundle, tmp_path_factory) -> Predictor:
    """The blended bundle with the blend weight moved wholly to its linear part (numpy only: exact scores)."""
    bundle = tmp_path_factory.mktemp("explain-linear-only") / "bundle"
    shutil.copytree(linear_bundle, bundle)
    for name, key in (("linear.json", "weight"), ("bundle.json", "linear")):
        info = json.loads((bundle / name).read_text())
        info[key] = 1.0 if key == "weight" else {"weight": 1.0}
        (bundle / name).write_text(json.dumps(info))
    return Predictor.from_bundle(bundle)


# ---------------------------------------------------------------- spans
def assert_spans_slice(text: str, spans) -> None:
    assert spans == sorted(spans)
    for (start, end), (next_start, _) in zip(spans, spans[1:] + [(len(text), len(text))]):
        assert 0 <= start < end <= next_start <= len(text)
        piece = text[start:end]
        assert piece.strip() == piece and piece   # never starts or ends in whitespace


def test_spans_lie_in_the_text_and_cover_every_non_space_character():
    """One property over 310 texts (odd and random Unicode) and every unit; the failing case is named."""
    for text in ODD_TEXTS + random_texts(300, seed=14):
        for unit in explain.UNITS:
            spans = explain.split(text, unit)
            assert_spans_slice(text, spans)
            covered = {i for start, end in spans for i in range(start, end)}
            uncovered = {i for i, ch in enumerate(text) if not ch.isspace()} - covered
            assert not uncovered, (unit, text, sorted(uncovered)[:5])


def pieces(text: str, unit: str = "sentence") -> list[str]:
    return [text[s:e] for s, e in explain.split(text, unit)]


def test_sentences_split_at_stops_line_breaks_and_cjk_full_stops():
    assert pieces(ODD_TEXTS[0]) == ["Line one.", "Line two!", "Line three?"]
    assert pieces(ODD_TEXTS[2]) == ["龍が目を覚ました。", "魔法使いは剣を探す！", "探偵が来た。"]
    assert pieces("Dr. Who? No… “Yes.” Fine.\u2028Next") == ["Dr.", "Who?", "No…", "“Yes.”", "Fine.", "Next"]
    assert pieces("3.14 is pi.") == ["3.14 is pi."]                   # a stop inside a number is no sentence end
    assert pieces(ODD_TEXTS[1], "phrase") == [
        "Café crème —", "déjà vu.", "Ame\u0301lie smiled;", "the e\u0301clair was gone."]
    words = explain.split(" ".join(f"w{i}" for i in range(13)), "words")
    assert len(words) == 3 and words[-1][1] - words[-1][0] == 3      # 6 + 6 + 1 words


@pytest.mark.parametrize("n_sentences,max_spans", [(3, 16), (16, 16), (17, 16), (400, 16), (50, 1), (9, 4)])
def test_the_cap_merges_adjacent_spans_into_at_most_max_spans(n_sentences, max_spans):
    rng = random.Random(n_sentences)
    text = " ".join("word " * rng.randint(1, 30) + "end." for _ in range(n_sentences))
    spans = explain.split(text)
    merged = explain.cap(spans, max_spans)
    assert len(merged) == min(len(spans), max_spans)
    assert_spans_slice(text, merged)
    assert merged[0][0] == spans[0][0] and merged[-1][1] == spans[-1][1]
    assert {s for s, _ in merged} <= {s for s, _ in spans} and {e for _, e in merged} <= {e for _, e in spans}
    if len(spans) > max_spans:   # similar lengths: no chunk more than twice the mean plus one sentence
        longest_sentence = max(e - s for s, e in spans)
        assert max(e - s for s, e in merged) <= 2 * len(text) / max_spans + longest_sentence


def test_delete_replaces_each_span_with_one_space():
    text = "One. Two words. Three."
    assert explain.delete(text, [(5, 15)]) == "One.   Three."
    assert explain.delete(text, [(16, 22), (0, 4)]) == "  Two words.  "


# ---------------------------------------------------------------- the predictor
def test_evidence_lists_spans_of_the_text_for_every_listed_label(pred):
    texts = ODD_TEXTS[:-1] + [TWO_TOPICS]
    results = pred.predict(texts, top_k=3, explain=True)
    for text, res in zip(texts, results):
        assert len(res["labels"]) == 3
        assert res["explanation"] == {"method": "occlusion", "unit": explain.DEFAULT_UNIT,
                                      "spans": len(explain.spans_of(text)), "max_spans": explain.MAX_SPANS}
        for item in res["labels"]:
            ev = item["evidence"]
            assert 0 < len(ev) <= explain.EVIDENCE_PER_LABEL
            assert [e["weight"] for e in ev] == sorted((e["weight"] for e in ev), reverse=True)
            for e in ev:
                assert set(e) == {"start", "end", "text", "weight"}
                assert 0 <= e["start"] < e["end"] <= len(text) and e["text"] == text[e["start"]:e["end"]]
                assert isinstance(e["weight"], float) and e["weight"] != 0


def test_evidence_offsets_slice_random_unicode_texts(pred):
    texts = random_texts(40, seed=41)
    for text, res in zip(texts, pred.predict(texts, explain=True)):
        for item in res["labels"]:
            for e in item["evidence"]:
                assert e["text"] == text[e["start"]:e["end"]] and e["text"].strip() == e["text"]


def test_explain_false_is_the_prediction_as_before(pred):
    texts = [TWO_TOPICS, ODD_TEXTS[3]]
    plain = pred.predict(texts)
    assert json.dumps(pred.predict(texts, explain=False)) == json.dumps(plain)
    assert all(set(r) == {"labels", "predicted", "truncated", "n_tokens", "n_windows"} for r in plain)
    assert all(set(x) == {"label", "score", "threshold", "predicted"} for r in plain for x in r["labels"])
    explained = pred.predict(texts, explain=True)
    for a, b in zip(plain, explained):   # explaining adds fields and changes no score or decision
        assert [{k: x[k] for k in ("label", "score", "threshold", "predicted")} for x in b["labels"]] == a["labels"]
        assert {k: b[k] for k in a if k != "labels"} == {k: v for k, v in a.items() if k != "labels"}


def test_weights_are_the_drop_of_the_served_score_without_each_span(linear_only_pred):
    """Each weight is the label's score minus the score of the text without the span, recomputed by hand
    through the predictor (on the linear part alone, whose numpy scores do not depend on batching)."""
    texts = [TWO_TOPICS + " Love letters, one summer, a wedding.", "A ghost in the haunted crypt. A starship."]
    checked = 0
    for res, text in zip(linear_only_pred.predict(texts, explain=True), texts):
        spans = explain.spans_of(text)
        without = linear_only_pred.predict([explain.delete(text, [s]) for s in spans])
        for item in res["labels"]:
            for e in item["evidence"]:
                alone = next(x["score"] for x in without[spans.index((e["start"], e["end"]))]["labels"]
                             if x["label"] == item["label"])
                assert e["weight"] == pytest.approx(item["score"] - alone, abs=1e-6)
                checked += 1
    assert checked >= 10


def test_blended_evidence_finds_each_topics_words(linear_bundle):
    """The tiny bundle's transformer is random, its linear part knows genre words: in the blend, each label's
    strongest evidence is the sentence holding its words."""
    labels = Predictor.from_bundle(linear_bundle).predict([TWO_TOPICS], explain=True)[0]["labels"]
    top = {x["label"]: x["evidence"][0] for x in labels}
    assert "dragon" in top["Fantasy"]["text"] and "murder" in top["Mystery"]["text"]
    assert top["Fantasy"]["weight"] > 0 and top["Mystery"]["weight"] > 0


def test_one_scoring_call_explains_every_label_of_every_text(pred, monkeypatch):
    calls = []
    original = pred.probabilities
    monkeypatch.setattr(pred, "probabilities", lambda texts: calls.append(len(texts)) or original(texts))
    texts = [TWO_TOPICS, ODD_TEXTS[0], ODD_TEXTS[2]]
    pred.predict(texts, explain=True)
    assert calls == [3, sum(len(explain.spans_of(t)) for t in texts)]


def test_variants_are_scored_in_bounded_groups_with_the_one_call_weights():
    """Each `score` call gets at most `chars_per_call` characters of variants (a longer variant alone), every
    variant is scored once, and the weights are exactly those of one call over every variant (the scorer reads
    each text on its own, so grouping cannot move a score; the int8 model's batch scales aside, this is the
    served path)."""
    import zlib

    import numpy as np

    texts = random_texts(40, seed=3) + ODD_TEXTS + [TWO_TOPICS * 30]
    calls: list[list[str]] = []

    def score(batch):
        calls.append(list(batch))
        return np.array([[zlib.crc32(t.encode("utf-8", "surrogatepass")) % 1000 / 1000, len(t) % 7 / 7]
                         for t in batch])

    probs = score(texts)
    reference = explain.explain_texts(score, texts, probs, chars_per_call=10**12)
    everything = sorted(calls[-1])
    for budget in (1, 60, 700, 5_000, 10**12):
        calls.clear()
        got = explain.explain_texts(score, texts, probs, chars_per_call=budget)
        assert all(sum(map(len, c)) <= budget or len(c) == 1 for c in calls), budget
        assert sorted(v for c in calls for v in c) == everything
        assert (len(calls) == 1) == (budget == 10**12), (budget, len(calls))
        for (spans, weights), (ref_spans, ref_weights) in zip(got, reference):
            assert spans == ref_spans and np.array_equal(weights, ref_weights), budget


def test_a_long_text_needs_at_most_max_spans_extra_texts_scored(tmp_path):
    """20,000 characters, hundreds of sentences, a bundle reading up to 4 windows: the model runs on at most
    MAX_SPANS variants of the text (each up to 4 windows) beyond the prediction itself. Counted, not timed."""
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, with_data=False, bench_rounds=0,
                              windows={"max_windows": 4, "stride": 8, "pooling": "mean"})
    pred, rows = counting_predictor(Predictor.from_bundle(bundle))
    sentence = "The haunted starship drifted through the dark galaxy. "
    text = (sentence * (20_000 // len(sentence) + 1))[:20_000]
    assert len(explain.split(text)) > 300
    pred.predict([text])
    served = sum(rows)
    rows.clear()
    res = pred.predict([text], explain=True)[0]
    assert res["explanation"]["spans"] == explain.MAX_SPANS and res["n_windows"] == 4
    assert sum(rows) - served <= explain.MAX_SPANS * 4
    assert all(e["text"] == text[e["start"]:e["end"]] for x in res["labels"] for e in x["evidence"])


@pytest.mark.parametrize("bad", ["yes", "true", 1, 0, None, [True]])
def test_explain_must_be_a_bool(pred, bad):
    assert Predictor.explain_problem(bad) and Predictor.explain_problem(True) is None
    with pytest.raises(InputError, match="explain must be true or false"):
        pred.predict(["a text"], explain=bad)


# ---------------------------------------------------------------- the fine-tuned sample model (slow)
@pytest.mark.slow
def test_two_topics_point_their_labels_at_their_own_sentences(sample_books_model, tmp_path):
    """MiniLM fine-tuned on the sample books: in a fantasy sentence followed by a crime sentence, the fantasy
    label's strongest evidence lies in the first sentence and the crime labels' in the second."""
    bundle = tmp_path / "bundle"
    model = tmp_path / "model"
    shutil.copytree(sample_books_model, model)
    proc = subprocess.run([sys.executable, "-m", "compression.quantize", "--model", str(model), "--out", str(bundle),
                           "--bench-rounds", "0", "--candidates", "int8"],
                          capture_output=True, text=True, cwd=config.ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = Predictor.from_bundle(bundle)
    fantasy = ("A young wizard and his dragon must find the enchanted sword before the dark sorcerer conquers "
               "the elf kingdom.")
    crime = "Detective Sarah Cole investigates a brutal murder, and the killer's next victim may be her own partner."
    text = f"{fantasy} {crime}"
    res = pred.predict([text], explain=True)[0]
    # both topics' labels rank among the model's five strongest (a short fine-tune may leave one under its tuned
    # threshold); their evidence, and that of every predicted crime label, must point at their own sentence
    ranked = [item["label"] for item in res["labels"]]
    assert {"Fantasy", "Mystery"} <= set(ranked[:5]), ranked[:5]
    own = {"Fantasy": (0, len(fantasy)), "Mystery": (len(fantasy) + 1, len(text)),
           "Thriller": (len(fantasy) + 1, len(text)), "Crime": (len(fantasy) + 1, len(text))}
    for item in res["labels"]:
        if item["label"] in own and (item["predicted"] or item["label"] in ("Fantasy", "Mystery")):
            top = item["evidence"][0]
            start, end = own[item["label"]]
            assert start <= top["start"] < top["end"] <= end and top["weight"] > 0, (item["label"], item["evidence"])


# ---------------------------------------------------------------- what the web pages highlight
def test_highlights_take_the_predicted_labels_positive_spans_in_score_order():
    result = {"labels": [
        {"label": "B", "predicted": True, "evidence": [{"start": 0, "end": 3, "weight": 0.2},
                                                       {"start": 4, "end": 6, "weight": -0.1}]},
        {"label": "A", "predicted": True, "evidence": [{"start": 4, "end": 6, "weight": -0.3}]},
        {"label": "C", "predicted": False, "evidence": [{"start": 0, "end": 3, "weight": 0.5}]}]}
    assert highlights(result) == [{"label": "B", "color": 0, "spans": [(0, 3, 0.2)]}]


def test_overlapping_spans_of_two_labels_become_flat_segments():
    text = "abcdefghij"
    marked = [{"label": "X", "color": 0, "spans": [(1, 6, 0.3)]}, {"label": "Y", "color": 1, "spans": [(4, 9, 0.1)]}]
    segs = segments(text, marked)
    assert "".join(s["text"] for s in segs) == text
    assert [(s["start"], s["end"], [x["label"] for x in s["labels"]]) for s in segs] == [
        (0, 1, []), (1, 4, ["X"]), (4, 6, ["X", "Y"]), (6, 9, ["Y"]), (9, 10, [])]
    assert segs[2]["labels"] == [{"label": "X", "color": 0, "weight": 0.3}, {"label": "Y", "color": 1, "weight": 0.1}]
