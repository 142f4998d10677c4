"""bench.explain runs end to end on a tiny blended bundle's own test split and writes the table it prints; its
random deletions match the evidence's word counts."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

from bench.explain import random_runs, top_sets, words_in
from tests.cases import check_each
from tests.tiny_bundle import TINY_LABELS, make_tiny_bundle

ROOT = __import__("config").ROOT


def test_explain_bench_reports_evidence_and_random_drops_per_unit_and_cap(tmp_path):
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, with_linear=True, bench_rounds=0)
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "bench.explain", "--bundle", str(bundle), "--rows", "12",
                           "--units", "sentence", "words", "--max-spans", "2", "16", "--draws", "2",
                           "--latency-texts", "2", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["texts"] == 12 and result["split"] == "test" and result["data"].endswith("dataset.csv")
    assert {(r["unit"], r["max_spans"]) for r in result["results"]} == {(u, c) for u in ("sentence", "words")
                                                                         for c in (2, 16)}
    for r in result["results"]:
        assert r["mean_spans"] <= r["max_spans"]
        assert set(r["deletions"]) == {"top1", "top3", "top20%"}
        for d in r["deletions"].values():
            assert d["instances"] == result["label_instances"] > 0
        deleted = {name: d["words_deleted"] for name, d in r["deletions"].items()}
        assert 0 < deleted["top1"] <= deleted["top3"], deleted            # the top 3 spans hold the top one
        assert set(r["latency_ms"]) == {"short", "long"}
    words = {r["max_spans"]: r for r in result["results"] if r["unit"] == "words"}
    assert words[2]["mean_spans"] <= 2 < words[16]["mean_spans"]   # the cap merges word chunks
    # the linear part knows each genre's words: its top word chunk outweighs random words of the same count
    assert words[16]["deletions"]["top1"]["evidence_drop"] > words[16]["deletions"]["top1"]["random_drop"]
    assert result["latency_texts"]["long"]["mean_words"] == 500
    assert "| words | 16 |" in proc.stdout and "random draws" in proc.stdout


def test_explain_bench_names_a_missing_data_set(tmp_path):
    bundle = make_tiny_bundle(tmp_path, TINY_LABELS, with_data=False, bench_rounds=0)
    proc = subprocess.run([sys.executable, "-m", "bench.explain", "--bundle", str(bundle), "--out",
                           str(tmp_path / "e.json")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "names no source_dataset; pass --data" in proc.stderr


def test_random_deletions_are_runs_of_the_same_word_counts_that_never_overlap():
    check_each(range(30), _random_deletions_are_runs_of_the_same_word_counts_that_never_overlap_case)


def _random_deletions_are_runs_of_the_same_word_counts_that_never_overlap_case(seed):
    rng = random.Random(seed)
    text = " ".join(rng.choice(["a", "bb", "ccc", "dddd."]) for _ in range(rng.randint(5, 60)))
    words = [m.span() for m in re.finditer(r"\S+", text)]
    lengths = [rng.randint(1, 4) for _ in range(rng.randint(1, 3))]
    runs = random_runs(words, lengths, rng)
    if sum(lengths) > len(words):
        assert runs == [(0, len(text))]
        return
    assert sorted(words_in(words, r) for r in runs) == sorted(lengths)
    runs.sort()
    assert all(a[1] < b[0] for a, b in zip(runs, runs[1:]))
    assert all(text[s:e].strip() == text[s:e] for s, e in runs)


def test_the_share_deletion_takes_top_spans_until_a_fifth_of_the_words():
    text = "one two three four five six seven eight nine ten"
    words = [m.span() for m in re.finditer(r"\S+", text)]
    spans = [words[i] for i in range(10)]
    sets = top_sets([4, 2, 9, 0, 1, 3, 5, 6, 7, 8], spans, words)
    assert sets == {"top1": [4], "top3": [4, 2, 9], "top20%": [4, 2]}
