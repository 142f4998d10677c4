"""The shared core: atomic outputs (`deployment/files.py`), the model maths (`deployment/scoring.py`), the text encoder
(`deployment/encoding.py`), and a `config` import that leaves the process environment alone."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployment.encoding import TextEncoder, Windows, default_stride
from deployment.files import OutputError, clean_stale, replace_dir, replace_file, write_text
from deployment.scoring import blend, decide, sigmoid

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- outputs
def test_replace_dir_swaps_a_whole_folder_in_and_leaves_no_staging_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker.json").write_text("old")
    (out / "stale.txt").write_text("from the old run")
    with replace_dir(out, owned_by="marker.json") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.partial-")
        (tmp / "marker.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["marker.json"] and (out / "marker.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_keeps_the_old_folder_when_the_block_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker.json").write_text("old")
    with pytest.raises(RuntimeError, match="half way"):
        with replace_dir(out, owned_by="marker.json") as tmp:
            (tmp / "marker.json").write_text("new")
            raise RuntimeError("failed half way")
    assert (out / "marker.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_refuses_a_folder_that_is_not_this_stages_output(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match=r"is not a model dir \(no settings\.json\): refusing to replace it"):
        with replace_dir(out, owned_by="settings.json", what="model dir"):
            pass
    assert (out / "thesis.tex").read_text() == "years of work"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        with replace_dir(tmp_path / "file"):
            pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_cleaned_but_a_live_runs_are_not(tmp_path):
    target = tmp_path / "preds.csv"
    dead = tmp_path / f".preds.csv.partial-{_dead_pid()}"
    dead.write_text("half a file")
    live = tmp_path / f".preds.csv.partial-{os.getppid()}"      # our parent is alive
    live.write_text("someone is writing")
    lookalike = tmp_path / "x.partners.csv"                      # not ours: never touched
    lookalike.write_text("keep")
    write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n"
    assert not dead.exists() and live.exists() and lookalike.read_text() == "keep"
    assert clean_stale(target) == []


def test_replace_file_writes_exact_bytes_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "data.csv"
    with replace_file(path, newline="") as fh:
        fh.write("a\r\nb\rc\x00\ufeff\n")
    assert path.read_bytes() == "a\r\nb\rc\x00\ufeff\n".encode("utf-8")
    with pytest.raises(ValueError, match="boom"):
        with replace_file(path) as fh:
            fh.write("partial")
            raise ValueError("boom")
    assert path.read_bytes() == "a\r\nb\rc\x00\ufeff\n".encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


# ---------------------------------------------------------------- scoring
def test_sigmoid_is_exact_in_the_middle_and_never_overflows_at_the_ends():
    x = np.array([-1e4, -745.0, -30.0, 0.0, 2.0, 30.0, 1e4])
    with np.errstate(over="raise", invalid="raise"):
        p = sigmoid(x)
    assert p.dtype == np.float64 and p[3] == 0.5
    assert abs(p[4] - 1 / (1 + np.exp(-2.0))) < 1e-15
    assert p[0] == 0.0 and p[-1] == 1.0 and np.all(np.diff(p) >= 0)


def test_blend_weights_the_linear_part_and_is_the_identity_without_one():
    p_model, p_linear = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    assert np.allclose(blend(p_model, p_linear, 0.25), [[0.3, 0.7]])
    assert blend(p_model, None, 0.7) is p_model
    assert np.array_equal(blend(p_model, p_linear, 0.0), p_model)


def test_a_log_odds_blend_is_a_weighted_sum_of_logits_per_label_and_stays_between_the_two_models():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, n_labels = int(rng.integers(1, 30)), int(rng.integers(1, 8))
        p_model = rng.random((n, n_labels)) ** rng.uniform(0.2, 5)    # some near 0 and near 1
        p_linear = rng.random((n, n_labels))
        p_model[rng.random(p_model.shape) < 0.05] = 0.0                 # exact 0 and 1 must not give nan
        p_linear[rng.random(p_linear.shape) < 0.05] = 1.0
        w = rng.random(n_labels) if rng.random() < 0.7 else float(rng.random())
        got = blend(p_model, p_linear, w, "logit")
        clip = lambda p: np.clip(p, 1e-15, 1 - 1e-15)
        z = np.asarray(w) * np.log(clip(p_linear) / (1 - clip(p_linear))) + (1 - np.asarray(w)) * np.log(
            clip(p_model) / (1 - clip(p_model)))
        assert got.shape == (n, n_labels) and np.all(np.isfinite(got))
        assert np.allclose(got, 1 / (1 + np.exp(-z)), rtol=0, atol=1e-12)
        lo, hi = np.minimum(p_model, p_linear), np.maximum(p_model, p_linear)
        assert np.all(got >= lo - 1e-12) and np.all(got <= hi + 1e-12)
    p_model, p_linear = np.array([[0.2, 0.8, 0.5]]), np.array([[0.6, 0.4, 0.9]])
    assert np.allclose(blend(p_model, p_linear, 0.0, "logit"), p_model, rtol=0, atol=1e-14)
    assert np.allclose(blend(p_model, p_linear, 1.0, "logit"), p_linear, rtol=0, atol=1e-14)
    per = blend(p_model, p_linear, np.array([0.0, 1.0, 0.5]), "logit")
    assert np.allclose(per[0, :2], [0.2, 0.4], rtol=0, atol=1e-14) and abs(per[0, 2] - 0.75) < 1e-12   # odds 1 and 9
    assert np.allclose(blend(p_model, p_linear, np.array([0.25, 0.5, 1.0])),    # per label in probability space too
                       [[0.3, 0.6, 0.9]])
    with pytest.raises(ValueError, match="blend space must be one of"):
        blend(p_model, p_linear, 0.5, "odds")


# ---------------------------------------------------------------- encoding
@pytest.fixture(scope="module")
def encoder(tiny_bundle) -> TextEncoder:
    return TextEncoder.from_file(tiny_bundle / "tokenizer.json", 16, ["input_ids", "attention_mask"])


def test_encoder_counts_every_token_and_truncates_keeping_the_end_token(encoder):
    text = " ".join(["dragon"] * 40)
    enc = encoder.encode([text, "a dragon"])
    assert enc.truncated == [True, False] and enc.n_tokens[0] == 42 and enc.n_tokens[1] == 4
    ids = enc.windows[0].ids
    assert len(ids) == 16 and ids[-1] == encoder.tokenizer.token_to_id("[SEP]")


def test_encoder_run_returns_rows_in_input_order_whatever_the_batching(encoder):
    texts = [" ".join(["word"] * n) for n in (9, 1, 5, 3, 12, 2, 7)]
    encoded = encoder.encode(texts)
    # a fake model whose "logit" is the row's token count: order mistakes show up as wrong numbers
    forward = lambda feeds: feeds["attention_mask"].sum(1, keepdims=True).astype(np.float32)  # noqa: E731
    for batch_size in (1, 2, 3, 32):
        for sort in (None, True, False):
            out = encoder.run(forward, encoded, batch_size, sort=sort)
            assert out[:, 0].tolist() == [min(n, 16) for n in encoded.n_tokens]
    feeds = encoder.feeds(encoded.windows[:2])
    assert set(feeds) == {"input_ids", "attention_mask"} and feeds["input_ids"].shape == (2, 11)


def test_each_texts_first_window_and_a_subset_of_windows(tiny_bundle):
    texts = [" ".join(["dragon"] * n) for n in (40, 3, 0, 90, 14)]
    encoded = TextEncoder.from_file(tiny_bundle / "tokenizer.json", 16, ["input_ids", "attention_mask"],
                                    windows=Windows(max_windows=5, stride=4)).encode(texts)
    assert max(encoded.n_windows) > 1, "the texts must have several windows"
    first = encoded.first_windows()
    assert first.tolist() == [int(np.flatnonzero(encoded.owner == t)[0]) for t in range(len(texts))]   # brute force
    assert encoded.first_windows().tolist() == np.searchsorted(encoded.owner, np.arange(len(texts))).tolist()
    sub = encoded.subset(first)
    assert [w.ids for w in sub.windows] == [encoded.windows[i].ids for i in first]
    assert sub.owner.tolist() == list(range(len(texts))) and sub.n_windows == [1] * len(texts)
    assert sub.n_tokens == [len(w.ids) for w in sub.windows] and not any(sub.truncated)
    assert default_stride(256) == 64 and default_stride(9) == 2


def test_decide_predicts_a_label_where_its_score_reaches_its_threshold():
    rng = np.random.default_rng(0)
    probs = rng.random((50, 4))
    per_label = np.array([0.2, 0.5, 0.5, 0.9])
    want = np.array([[p >= t for p, t in zip(row, per_label)] for row in probs])   # written out per cell
    assert decide(probs, per_label).tolist() == want.tolist()
    assert decide(probs, 0.5).tolist() == (probs >= 0.5).tolist() and decide(probs, 0.5).dtype == bool
    assert decide(np.array([[0.5]]), [0.5]).tolist() == [[True]]                     # reaching it is enough


# ---------------------------------------------------------------- config
def test_importing_config_changes_no_environment_variable():
    code = ("import os, json; before = dict(os.environ); import config; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "[]"
    code = "import os, config; config.use_offline_hub(); print(os.environ['HF_HUB_OFFLINE'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "1"


def test_large_csv_fields_reads_a_huge_cell_and_restores_the_process_limit():
    import csv
    import io

    from deployment.files import large_csv_fields

    original = csv.field_size_limit(1000)   # a known, small process limit for this test
    try:
        cell = "x" * 5000
        with pytest.raises(csv.Error, match="field larger than field limit"):
            list(csv.reader(io.StringIO(f"a\n{cell}\n")))
        with large_csv_fields():
            assert list(csv.reader(io.StringIO(f"a\n{cell}\n")))[1] == [cell]
        assert csv.field_size_limit() == 1000
    finally:
        csv.field_size_limit(original)
