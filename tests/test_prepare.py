"""The data-preparation stage: its pure steps, the data contract of its output, its bad-input errors, real data.

    .venv/bin/python -m pytest tests/test_prepare.py -q

Tiny frames and CSVs are made here; the real-data tests read ../shared and skip with a reason without it.
"""
from __future__ import annotations

import csv
import gzip
import html
import json
import math
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import data, dataset, rawfiles
from training.data import PrepareError
from training import prepare as prepare_module
from training.prepare import PrepareSettings, main, run

ROOT = Path(__file__).resolve().parents[1]
GENRES = ["Fantasy", "Science Fiction", "Mystery", "Romance", "Horror", "Thriller", "Historical",
          "Young Adult", "Humor", "Poetry", "Biography", "Western"]
WORDS = ("dragon ship detective letter storm village queen signal murder garden castle winter "
         "engine secret river orphan empire ghost train market island mirror sword clock").split()


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def frame(texts, labels) -> pd.DataFrame:
    df = pd.DataFrame({"text": texts, data.LINE_COL: range(2, len(texts) + 2)})
    df["labels"] = pd.Series([list(x) for x in labels], dtype=object)
    return df


def write_csv(path: Path, rows: list[dict], columns=("url", "title", "text", "labels")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return path


def independent_key(text: str) -> str:
    """A stricter duplicate key than the stage's: every non-alphanumeric character goes."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).casefold())


def books(n: int = 240, seed: int = 0) -> list[dict]:
    """Synthetic scraper rows: skewed genres (1-3 a book), one rare genre, and known defects appended:
    3 rows without text, 4 duplicates (2 exact, 2 differing in case/punctuation) carrying extra labels."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(GENRES) + 1)
    weights /= weights.sum()
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        labels = list(rng.choice(GENRES, size=k, replace=False, p=weights))
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 40))))
        rows.append({"url": f"https://books.example/{i}", "title": f"Book {i}",
                     "text": f"Book {i} tells of a {words} &amp; more.", "labels": labels})
    rows[0]["labels"] = ["Fantasy", "Fiction » Fantasy", "Rare, with comma"]   # a hierarchical and a rare label
    for i, genre in enumerate(["Fantasy", "Mystery", "Romance", "Horror"], start=1):
        rows[i]["labels"] = [genre]             # the originals of the duplicates below
    rows += [
        {"url": "https://books.example/e1", "title": "Empty", "text": "", "labels": ["Fantasy"]},
        {"url": "https://books.example/e2", "title": "Blank", "text": "  \n\t ", "labels": ["Fantasy"]},
        {"url": "https://books.example/e3", "title": "Entity", "text": "&nbsp;", "labels": ["Horror"]},
        {**rows[1], "url": "https://books.example/d1", "labels": ["Western"]},                   # exact
        {**rows[2], "url": "https://books.example/d2", "labels": rows[2]["labels"]},              # exact, same labels
        {**rows[3], "url": "https://books.example/d3", "text": rows[3]["text"].replace("Book", "BOOK") + "!!",
         "labels": ["Poetry"]},                                                                   # near
        {**rows[4], "url": "https://books.example/d4", "text": rows[4]["text"].replace(" ", "  ,"),
         "labels": ["Biography"]},                                                                # near
    ]
    return rows


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.prepare", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=180)


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []


# --------------------------------------------------------------------------------------------------------
# text, labels, keys
# --------------------------------------------------------------------------------------------------------
def test_normalise_text_decodes_entities_composes_unicode_and_collapses_whitespace():
    decomposed = "Cafe\u0301"
    assert data.normalise_text(f"  Tom &amp; Jerry&#39;s\n\n{decomposed}\u200b\t day ") == "Tom & Jerry's Café day"
    assert data.normalise_text("&nbsp; \n") == ""


def test_duplicate_key_ignores_case_punctuation_and_spacing_but_not_plus_or_hash():
    assert data.dedup_key("Convert Console.WriteLine into text box") == data.dedup_key("convert console writeline into textbox!")
    assert len({data.dedup_key(t) for t in ("What is C?", "What is C++?", "What is C#?")}) == 3


# Letters and marks per script: the marks (Devanagari vowel signs, Thai vowels and tone marks, Arabic harakat,
# Greek and Latin accents as combining characters) are what tells many words apart.
SCRIPTS = {
    "latin": ("abcdefghijklmnopqrstuvwxyzéèêëàâäôöûüçñ", "\u0301\u0300\u0308\u0327\u0303\u030c"),
    "cyrillic": ("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "\u0301\u0306"),
    "greek": ("αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ", "\u0301\u0308"),
    "arabic": ("ابتثجحخدذرزسشصضطظعغفقكلمنهوي", "\u064e\u064f\u0650\u0651\u0652\u064b"),
    "devanagari": ("कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह", "\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094d\u0902"),
    "thai": ("กขคงจฉชซญดตถทธนบปผพฟภมยรลวสหอฮ", "\u0e31\u0e34\u0e35\u0e36\u0e37\u0e38\u0e39\u0e48\u0e49\u0e4a\u0e4b"),
    "cjk": ("的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以", ""),
}


def script_text(rng, script: str) -> str:
    """5-10 words of letters, each letter followed by one of the script's marks half the time."""
    letters, marks = SCRIPTS[script]
    words = ["".join(rng.choice(letters) + (rng.choice(marks) if marks and rng.random() < 0.5 else "")
                     for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(5, 10))]
    return " ".join(words)


def distinct_key(text: str) -> str:
    """What makes two texts different for this test: every character but spaces, in NFC, lower case."""
    return unicodedata.normalize("NFC", "".join(text.split())).casefold()


def test_distinct_texts_in_every_script_stay_distinct_and_spelling_variants_merge(tmp_path):
    """Random texts in seven scripts, and pairs that differ in one mark only (the Devanagari, Thai and Arabic
    case), each with a label of its own; plus copies of some changed only in case, spacing or punctuation, each
    with one more label. After prepare: one row per distinct text, with its own label and its copies' labels."""
    import random

    rng = random.Random(6)
    bases = []
    while len(bases) < 140:
        script = list(SCRIPTS)[len(bases) % len(SCRIPTS)]
        text = script_text(rng, script)
        letters, marks = SCRIPTS[script]
        if marks and len(bases) % 2:   # a minimal pair: the previous text of this script with one mark changed
            prev = next((t for t in reversed(bases) if t[0] in letters), "")
            spots = [i for i, c in enumerate(prev) if c in marks]
            if spots:
                i = rng.choice(spots)
                text = prev[:i] + rng.choice([m for m in marks if m != prev[i]]) + prev[i + 1:]
        if distinct_key(text) not in {distinct_key(b) for b in bases}:
            bases.append(text)
    rows, expected = [], {}
    for i, text in enumerate(bases):
        rows.append({"text": text, "labels": [f"base {i}"]})
        expected[i] = {f"base {i}"}
    for j, i in enumerate(rng.sample(range(len(bases)), 60)):
        variant = rng.choice([
            lambda t: t,                                                    # an exact copy
            lambda t: t.upper(),                                           # case
            lambda t: "  " + t.replace(" ", rng.choice(["   ", "\n", "\t", " \r\n "])) + " ",   # spacing
            lambda t: t.replace(" ", rng.choice([", ", ". ", " - ", "! ", " « "]), 2) + "?",      # punctuation
        ])(bases[i])
        rows.append({"text": variant, "labels": [f"copy {j}"]})
        expected[i].add(f"copy {j}")
    src = tmp_path / "scripts.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["--input", str(src), "--out", str(out), "--quiet", "--min-label-freq", "1",
                 "--split", "1", "0", "0"]) == 0
    df, _ = dataset.load_prepared(out)
    assert len(df) == len(bases), f"{len(bases)} distinct texts became {len(df)} rows"
    by_text = {distinct_key(t): set(labels) for t, labels in zip(df["text"], df["labels"])}
    for i, text in enumerate(bases):
        assert by_text[distinct_key(data.normalise_text(text))] == expected[i], text


def test_a_label_that_is_only_a_separator_is_kept():
    assert data.parse_labels_cell('["»", "Fiction » Fantasy", " » "]', "x") == ["»", "Fiction » Fantasy"]
    assert data.normalise_label("Fiction »") == "Fiction" and data.normalise_label("> ") == ">"


def test_labels_cell_is_a_json_list_whose_names_may_hold_commas_and_hierarchy_marks():
    cell = '["Romance, Historical", "Fiction > Fantasy >  Epic", "Fiction»Fantasy", " Tom &amp; Jerry ", "Fantasy", "Fantasy", ""]'
    assert data.parse_labels_cell(cell, "x.csv line 2") == [
        "Romance, Historical", "Fiction » Fantasy » Epic", "Fiction » Fantasy", "Tom & Jerry", "Fantasy"]


@pytest.mark.parametrize("cell", ["", "  ", "[]", "null", None, float("nan")])
def test_empty_labels_cells_mean_no_labels(cell):
    assert data.parse_labels_cell(cell, "x.csv line 2") == []


@pytest.mark.parametrize("cell, problem", [
    ("Fantasy, Horror", "not valid JSON"),
    ("['Fantasy']", "not valid JSON"),                 # Python repr, as the seeds wrote it: never eval'd
    ('"Fantasy"', "not a list"),
    ('{"Fantasy": 1}', "not a list"),
    ("[1, 2]", "must be strings"),
])
def test_malformed_labels_cells_raise_with_the_place_and_the_fix(cell, problem):
    with pytest.raises(PrepareError, match=problem) as err:
        data.parse_labels_cell(cell, "books.csv line 7")
    assert str(err.value).startswith("books.csv line 7: ")
    assert "JSON list" in str(err.value) or "quote every label" in str(err.value)


def test_label_vocabulary_is_most_frequent_first_then_by_name():
    assert data.label_vocabulary([["b", "a"], ["c", "a"], ["c"], ["d"]]) == ["a", "c", "b", "d"]


def test_encode_labels_gives_a_uint8_row_per_list_and_refuses_unknown_labels():
    y = data.encode_labels([["b"], ["a", "b"], []], ["a", "b"])
    assert y.dtype == np.uint8 and y.tolist() == [[0, 1], [1, 1], [0, 0]]
    with pytest.raises(PrepareError, match="'z' is not in the label list"):
        data.encode_labels([["z"]], ["a"])


# --------------------------------------------------------------------------------------------------------
# pure steps on tiny frames
# --------------------------------------------------------------------------------------------------------
def test_texts_without_content_after_normalising_are_dropped():
    df, _ = data.normalise_texts(frame(["a  b", "&nbsp;", " ", "c"], [["x"]] * 4))
    out, facts = data.drop_empty_text(df)
    assert out["text"].tolist() == ["a b", "c"] and facts == {"dropped": 2}


def test_duplicates_keep_the_first_copy_with_the_union_of_labels():
    df = frame(["The Hobbit.", "Dune", "the  hobbit", "The Hobbit.", "Dune"],
               [["Fantasy"], ["SF"], ["Children's", "Fantasy"], ["Classic"], ["SF"]])
    out, facts = data.deduplicate(df, "near")
    assert out["text"].tolist() == ["The Hobbit.", "Dune"]
    assert out["labels"].tolist() == [["Fantasy", "Children's", "Classic"], ["SF"]]
    assert out[data.LINE_COL].tolist() == [2, 3]                 # the first copy's row, passthrough included
    assert facts["duplicates_merged"] == 3 and facts["groups"] == 2
    assert facts["exact"] == 2 and facts["near_exact"] == 1
    assert facts["rows_with_labels_added"] == 1


def test_exact_dedup_keeps_near_duplicates_and_none_keeps_everything():
    df = frame(["The Hobbit.", "the hobbit", "The Hobbit."], [["a"], ["b"], ["c"]])
    assert len(data.deduplicate(df, "exact")[0]) == 2
    assert len(data.deduplicate(df, "none")[0]) == 3


@pytest.mark.parametrize("min_freq, n_rows, expected", [
    (0.01, 12813, 129),     # the CMU books: 1% of 12,813 rows is 128.13, so a genre needs 129
    (0.01, 300, 3),         # exactly 1%: 3 rows are enough (no float round-up to 4)
    (0.5, 3, 2),
    (0.0, 50, 1),           # 0 keeps every label that occurs at all
    (1, 50, 1),
    (5, 50, 5),             # >= 1 is a count, whatever the number of rows
    (5.0, 3, 5),
])
def test_min_label_freq_below_one_is_a_share_of_rows_and_from_one_up_a_count(min_freq, n_rows, expected):
    assert data.min_count_for(min_freq, n_rows) == expected


@pytest.mark.parametrize("min_freq", [-0.1, 2.5])
def test_negative_or_fractional_counts_are_refused(min_freq):
    with pytest.raises(PrepareError, match="--min-label-freq"):
        data.min_count_for(min_freq, 100)


def test_pruning_by_share_and_by_count_then_dropping_rows_left_without_labels():
    labels = [["a", "b"]] * 6 + [["a", "c"]] * 3 + [["d"]]        # a:9 b:6 c:3 d:1 over 10 rows
    df = frame([f"t{i}" for i in range(10)], labels)
    by_share, facts = data.prune_rare_labels(df, 0.3)              # needs 3 of 10 rows
    assert facts["min_count"] == 3 and facts["dropped_labels"] == {"d": 1}
    by_count, facts = data.prune_rare_labels(df, 4)                # needs 4 rows
    assert facts["dropped_labels"] == {"c": 3, "d": 1}
    assert by_count["labels"].tolist()[6:] == [["a"], ["a"], ["a"], []]
    kept, facts = data.drop_unlabelled(by_count)
    assert len(kept) == 9 and facts == {"dropped": 1}


def test_label_map_renames_merges_and_drops(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Sci-Fi": "Science Fiction", "SF": "Science Fiction", "Misc": None,
                                "Fiction > Fantasy": "Fantasy", "Unused": "X"}))
    mapping = rawfiles.load_label_map(path)
    df = frame(["a", "b", "c"], [["Sci-Fi", "SF", "Misc"], ["Fiction » Fantasy", "Fantasy"], ["Misc"]])
    out, facts = data.apply_label_map(df, mapping)
    assert out["labels"].tolist() == [["Science Fiction"], ["Fantasy"], []]
    assert facts["dropped"] == ["Misc"] and facts["unused_keys"] == ["Unused"]
    assert facts["renamed"] == ["Fiction » Fantasy", "SF", "Sci-Fi"]


@pytest.mark.parametrize("content, problem", [
    ("not json", "not valid JSON"),
    ('["a", "b"]', "must be a JSON object"),
    ('{"a": 3}', "use a label string, or null"),
])
def test_bad_label_map_files_are_refused(tmp_path, content, problem):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(PrepareError, match=problem):
        rawfiles.load_label_map(path)


def test_hierarchy_keep_leaf_and_expand_to_prefix_paths():
    df = frame(["a", "b"], [["Fiction » Fantasy » Epic", "Nonfiction » General"], ["Fiction » General", "Fiction"]])
    assert data.apply_hierarchy(df, "keep")[0]["labels"].tolist() == df["labels"].tolist()
    assert data.apply_hierarchy(df, "leaf")[0]["labels"].tolist() == [["Epic", "General"], ["General", "Fiction"]]
    expanded, facts = data.apply_hierarchy(df, "expand")
    assert expanded["labels"].tolist() == [
        ["Fiction", "Fiction » Fantasy", "Fiction » Fantasy » Epic", "Nonfiction", "Nonfiction » General"],
        ["Fiction", "Fiction » General"],
    ]
    assert facts["hierarchical_labels"] == 3


# --------------------------------------------------------------------------------------------------------
# the output's data contract, on a synthetic details CSV
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepared")
    source = write_csv(folder / "books_details.csv", books())
    out = folder / "out"
    settings = PrepareSettings(input=source, out=out, min_label_freq=5, seed=3, text_cols=("text",))
    report = run(settings, progress=False, log=lambda *a: None)
    df, labels = dataset.load_prepared(out)
    return out, df, labels, report


def test_output_folder_has_the_four_files_and_no_leftovers(prepared):
    out, *_ = prepared
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".") or p.name == "out") == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.csv", "label_frequencies.png", "labels.json", "report.json"]
    assert (out / "label_frequencies.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_columns_are_text_labels_split_then_passthrough(prepared):
    out, *_ = prepared
    first_line = (out / "dataset.csv").read_text(encoding="utf-8").split("\n")[0]
    assert first_line == '"text","labels","split","url","title"'   # every cell quoted: a bare \r cannot end a row


def test_every_row_has_labels_and_every_label_is_in_the_vocabulary(prepared):
    _, df, labels, _ = prepared
    assert df["labels"].map(len).min() >= 1
    assert set().union(*df["labels"]) == set(labels)
    mapping = json.loads((prepared[0] / "labels.json").read_text(encoding="utf-8"))
    assert list(mapping.values()) == list(range(len(mapping)))     # written in index order
    counts = Counter(x for row in df["labels"] for x in row)
    assert labels == sorted(counts, key=lambda x: (-counts[x], x))


def test_no_text_appears_in_two_splits(prepared):
    _, df, _, _ = prepared
    keys = df["text"].map(independent_key)
    assert not keys.duplicated().any()


def test_split_fractions_are_within_tolerance_and_every_label_is_in_train(prepared):
    _, df, labels, report = prepared
    shares = df["split"].value_counts(normalize=True)
    for split, fraction in zip(data.SPLITS, (0.8, 0.1, 0.1)):
        assert shares[split] == pytest.approx(fraction, abs=0.03)
    train_labels = set().union(*df.loc[df["split"] == "train", "labels"])
    assert train_labels == set(labels)
    assert report["split_sizes"] == df["split"].value_counts().to_dict()


def test_report_counts_match_the_defects_built_into_the_input(prepared):
    _, df, labels, report = prepared
    steps = {s["step"]: s for s in report["steps"]}
    assert report["rows_in"] == 247
    assert steps["drop_empty_text"]["dropped"] == 3
    assert steps["deduplicate"]["duplicates_merged"] == 4
    assert (steps["deduplicate"]["exact"], steps["deduplicate"]["near_exact"]) == (2, 2)
    assert steps["deduplicate"]["rows_with_labels_added"] == 3      # d2 repeats its original's labels
    assert {"Rare, with comma", "Fiction » Fantasy"} <= set(steps["prune_rare_labels"]["dropped_labels"])
    assert report["labels_in"] == len(GENRES) + 2 and report["labels_out"] == len(labels) == len(GENRES)
    assert report["rows_out"] == len(df) == 240
    # each step starts where the previous one ended
    for before, after in zip(report["steps"], report["steps"][1:]):
        assert before["rows_after"] == after["rows_before"] and before["labels_after"] == after["labels_before"]
    assert report["settings"]["min_label_freq"] == 5 and report["settings"]["seed"] == 3
    for split in data.SPLITS:
        in_split = df.loc[df["split"] == split, "labels"]
        assert report["label_frequencies"][split] == {x: sum(x in row for row in in_split) for x in labels}


def test_merged_duplicate_keeps_the_first_copy_and_gains_the_other_labels(prepared):
    _, df, _, _ = prepared
    row = df[df["url"] == "https://books.example/1"].iloc[0]
    assert "Western" in row["labels"]
    assert not (df["url"].str.startswith("https://books.example/d")).any()
    assert "&amp;" not in row["text"] and " & more." in row["text"]


def test_same_seed_writes_the_same_dataset_and_a_rerun_replaces_the_output(tmp_path):
    source = write_csv(tmp_path / "b.csv", books(120))
    out = tmp_path / "out"
    args = ["--input", str(source), "--out", str(out), "--min-label-freq", "3", "--quiet"]
    assert main(args) == 0
    first = (out / "dataset.csv").read_bytes()
    assert main(args) == 0
    assert (out / "dataset.csv").read_bytes() == first
    assert main([*args, "--seed", "9", "--resplit"]) == 0   # without --resplit the old texts keep their split
    assert (out / "dataset.csv").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_while_writing_leaves_the_previous_output_untouched(tmp_path, monkeypatch):
    source = write_csv(tmp_path / "b.csv", books(60))
    out = tmp_path / "out"
    args = ["--input", str(source), "--out", str(out), "--min-label-freq", "3", "--quiet"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_plot(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_module, "plot_label_frequencies", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        main([*args, "--seed", "5"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_several_text_columns_are_joined_by_a_blank_line(tmp_path):
    rows = [{"url": f"u{i}", "title": f"Title {i}", "text": f"Body   of {i}", "labels": ["q"]} for i in range(12)]
    out = tmp_path / "out"
    assert main(["--input", str(write_csv(tmp_path / "q.csv", rows)), "--out", str(out), "--text-col", "title,text",
                 "--min-label-freq", "1", "--quiet"]) == 0
    df, _ = dataset.load_prepared(out)
    assert "Title 0\n\nBody of 0" in set(df["text"])
    assert "title" in df.columns                      # the raw column still passes through


def test_jsonl_input_with_label_map_and_expanded_hierarchy(tmp_path):
    source = tmp_path / "cats.jsonl.gz"
    lines = [{"id": str(i), "text": f"story number {i}",
              "labels": ["Fiction > Fantasy" if i % 2 else "Fiction > Horror", "Sci-Fi" if i % 3 else "Misc"]}
             for i in range(30)]
    source.write_bytes(gzip.compress("\n".join(map(json.dumps, lines)).encode()))
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"Sci-Fi": "Science Fiction", "Misc": None}))
    out = tmp_path / "out"
    assert main(["--input", str(source), "--out", str(out), "--label-map", str(label_map), "--hierarchy", "expand",
                 "--min-label-freq", "1", "--quiet"]) == 0
    df, labels = dataset.load_prepared(out)
    assert labels == ["Fiction", "Science Fiction", "Fiction » Fantasy", "Fiction » Horror"]
    assert df["id"].tolist() == [str(i) for i in range(30)]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [s["step"] for s in report["steps"]] == ["normalise_text", "drop_empty_text", "deduplicate", "label_map",
                                                    "hierarchy", "prune_rare_labels", "drop_unlabelled", "split"]


def test_load_prepared_refuses_a_label_missing_from_labels_json(prepared, tmp_path):
    out, *_ = prepared
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "dataset.csv").write_bytes((out / "dataset.csv").read_bytes())
    labels = json.loads((out / "labels.json").read_text(encoding="utf-8"))
    del labels[next(iter(labels))]
    (broken / "labels.json").write_text(json.dumps({x: i for i, x in enumerate(labels)}))
    with pytest.raises(PrepareError, match=r"dataset.csv line \d+: label .* is not in labels.json"):
        dataset.load_prepared(broken)
    with pytest.raises(PrepareError, match="prepared data folder not found"):
        dataset.load_prepared(tmp_path / "nowhere")
    (broken / "labels.json").unlink()
    with pytest.raises(PrepareError, match="labels.json: missing"):
        dataset.load_prepared(broken)


# --------------------------------------------------------------------------------------------------------
# bad input: exit code 2, one line naming file/row/fix, nothing left behind
# --------------------------------------------------------------------------------------------------------
def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """case -> (CLI arguments, fragments the one-line message must contain)."""
    good = write_csv(tmp / "good.csv", books(40))
    multiline = tmp / "bad_cell.csv"
    multiline.write_text('url,title,text,labels\n'
                         'u1,T1,plain text,"[""Fantasy""]"\n'
                         'u2,T2,"a text\nover three\nlines","[""Horror""]"\n'
                         'u3,T3,third text,"Fantasy, Horror"\n', encoding="utf-8")
    (tmp / "extra_field.csv").write_text('url,title,text,labels\nu1,T1,text,"[""a""]"\nu2,T2,a, b,"[""a""]"\n')
    (tmp / "bad_line.jsonl").write_text('{"text": "a", "labels": ["x"]}\n{"text": "b", "labels": ["x"\n')
    (tmp / "not_utf8.csv").write_bytes(b'url,title,text,labels\nu1,T1,caf\xe9,"[""a""]"\n')
    (tmp / "empty.csv").write_text("")
    write_csv(tmp / "tiny.csv", [{"url": "u1", "title": "T1", "text": "one", "labels": ["a"]},
                                 {"url": "u2", "title": "T2", "text": "two", "labels": ["a"]}])
    write_csv(tmp / "unique_labels.csv", [{"url": f"u{i}", "title": f"T{i}", "text": f"text number {i}",
                                           "labels": [f"label {i}"]} for i in range(300)])
    (tmp / "no_labels.jsonl").write_text('{"text": "a", "tags": ["x"]}\n')
    (tmp / "surrogate.jsonl").write_text('{"text": "a", "labels": ["x"]}\n{"text": "b", "title": "\\udfff", "labels": ["x"]}\n')
    (tmp / "repeated.csv").write_text('url,title,text,title,labels\nu1,T1,text,T2,"[""a""]"\n')
    (tmp / "repeated.jsonl").write_text('{"text": "a", "text": "b", "labels": ["x"]}\n')
    (tmp / "map.json").write_text("{oops")
    (tmp / "stranger").mkdir()
    (tmp / "stranger" / "keep.txt").write_text("someone's work")
    g = ["--input", str(good)]
    return {
        "missing file": (["--input", str(tmp / "nope.csv")], ["nope.csv", "file not found", "--input"]),
        "missing text column": ([*g, "--text-col", "body"], ["good.csv", "line 1", "no column 'body'", "--text-col"]),
        "missing labels column": (["--input", str(tmp / "no_labels.jsonl")], ["no_labels.jsonl", "'labels'", "--labels-col"]),
        "malformed labels cell": (["--input", str(multiline)], ["bad_cell.csv line 6", "not valid JSON", "JSON list"]),
        "extra csv field": (["--input", str(tmp / "extra_field.csv")], ["extra_field.csv line 3", "expected 4 fields", "quote"]),
        "malformed jsonl line": (["--input", str(tmp / "bad_line.jsonl")], ["bad_line.jsonl line 2", "not valid JSON"]),
        "not utf-8": (["--input", str(tmp / "not_utf8.csv")], ["not_utf8.csv line 2", "UTF-8"]),
        "empty file": (["--input", str(tmp / "empty.csv")], ["empty.csv", "empty file"]),
        "empty after pruning": ([*g, "--min-label-freq", "1000"], ["good.csv", "no rows keep a label", "lower --min-label-freq"]),
        "too few rows to split": (["--input", str(tmp / "tiny.csv"), "--min-label-freq", "1"],
                                  ["tiny.csv", "only 2 rows left", "--split"]),
        "labels too rare to split": (["--input", str(tmp / "unique_labels.csv"), "--min-label-freq", "1"],
                                     ["unique_labels.csv", "valid split got no rows of 300", "too rare to share",
                                      "300 of 300 labels are on a single row", "raise --min-label-freq", "--split"]),
        "every label below the floor": (["--input", str(tmp / "unique_labels.csv")],
                                        ["unique_labels.csv", "no rows keep a label", "all 300 labels are rarer",
                                         "lower --min-label-freq"]),
        "split not summing to one": ([*g, "--split", "0.8", "0.3", "0.1"], ["--split 0.8 0.3 0.1", "sum to 1"]),
        "split with two numbers": ([*g, "--split", "0.8", "0.2"], ["--split", "3 argument"]),
        "split not a number": ([*g, "--split", "0.8", "x", "0.1"], ["--split", "must be a number >= 0 and <= 1, got 'x'"]),
        "lone surrogate": (["--input", str(tmp / "surrogate.jsonl")],
                           ["surrogate.jsonl line 2", "field 'title' holds a lone surrogate (U+DFFF", "UTF-8"]),
        "repeated csv column": (["--input", str(tmp / "repeated.csv")],
                                ["repeated.csv line 1 (header)", "'title' appear more than once", "rename"]),
        "repeated jsonl key": (["--input", str(tmp / "repeated.jsonl")],
                               ["repeated.jsonl line 1", "'text' appear more than once"]),
        "fractional count": ([*g, "--min-label-freq", "2.5"], ["--min-label-freq 2.5", "whole numbers"]),
        "bad label map": ([*g, "--label-map", str(tmp / "map.json")], ["map.json line 1", "not valid JSON"]),
        "missing label map": ([*g, "--label-map", str(tmp / "nomap.json")], ["nomap.json", "not found", "--label-map"]),
    }


BAD_CASES = ["missing file", "missing text column", "missing labels column", "malformed labels cell",
             "extra csv field", "malformed jsonl line", "not utf-8", "empty file", "empty after pruning", "too few rows to split",
             "labels too rare to split", "every label below the floor",
             "split not summing to one", "split with two numbers", "split not a number", "fractional count",
             "bad label map", "missing label map", "lone surrogate", "repeated csv column", "repeated jsonl key"]
# One bad number through the real process ("split not a number"); the other numeric options' wiring is checked in
# process below, and their rules in tests/test_cli_types.py.


def test_every_numeric_option_is_checked_at_the_parser(tmp_path, capsys):
    from tests.cases import parser_refuses
    from training import prepare

    g = ["--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out")]
    for args, message in [(["--split", "1.1", "-0.1", "0"], "must be a number >= 0 and <= 1, got '1.1'"),
                          (["--min-label-freq=-1"], "--min-label-freq: must be a number >= 0"),
                          (["--seed=-1"], "--seed: must be an integer >= 0, got '-1'"),
                          (["--min-words", "0"], "--min-words: must be an integer >= 1, got '0'")]:
        parser_refuses(prepare.main, [*g, *args], message, capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_leaves_no_output(tmp_path, case):
    args, fragments = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    result = cli(*args, "--out", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert_no_output(out)


def test_an_existing_folder_that_is_not_a_prepare_output_is_left_alone(tmp_path):
    _bad_inputs(tmp_path)
    stranger = tmp_path / "stranger"
    result = cli("--input", str(tmp_path / "good.csv"), "--out", str(stranger), "--min-label-freq", "2")
    assert result.returncode == 2
    assert "is not a training.prepare output" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in stranger.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_help_describes_every_option():
    result = cli("--help")
    assert result.returncode == 0
    for option in ("--input", "--out", "--name", "--text-col", "--labels-col", "--min-label-freq", "--split",
                   "--seed", "--label-map", "--hierarchy", "--dedup", "--format"):
        assert option in result.stdout


# --------------------------------------------------------------------------------------------------------
# real data (../shared)
# --------------------------------------------------------------------------------------------------------
def expected_counts(path: Path, min_freq: float, keep: str = r"[\W_]+") -> dict:
    """The report's headline numbers, recomputed here from the raw file with plain Python."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    merged: dict[str, set] = {}
    for r in records:
        text = " ".join(unicodedata.normalize("NFC", html.unescape(r["text"] or "")).split())
        if not text:
            continue
        key = re.sub(keep, "", unicodedata.normalize("NFKC", text).casefold())
        merged.setdefault(key, set()).update(r["labels"])
    counts = Counter(x for labels in merged.values() for x in labels)
    need = math.ceil(min_freq * len(merged)) if min_freq < 1 else min_freq
    kept = {x for x, c in counts.items() if c >= need}
    return {
        "rows_in": len(records),
        "labels_in": len({x for r in records for x in r["labels"]}),
        "duplicates_merged": len(records) - len(merged),
        "labels_out": len(kept),
        "rows_out": sum(bool(labels & kept) for labels in merged.values()),
    }


def run_real(source: Path, out: Path, *extra: str) -> tuple[dict, pd.DataFrame, list[str]]:
    result = cli("--input", str(source), "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("prepared ")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    df, labels = dataset.load_prepared(out)
    return report, df, labels


def assert_contract(df: pd.DataFrame, labels: list[str], report: dict) -> None:
    assert df["labels"].map(len).min() >= 1
    assert not df["text"].map(independent_key).duplicated().any()
    assert set().union(*df.loc[df["split"] == "train", "labels"]) == set(labels)
    shares = df["split"].value_counts(normalize=True)
    for split, fraction in zip(data.SPLITS, (0.8, 0.1, 0.1)):
        assert shares[split] == pytest.approx(fraction, abs=0.01)
    # stratified: every label's share in each split stays near the split's fraction
    for label in labels[:10]:
        per_split = {s: report["label_frequencies"][s][label] / report["label_frequencies"]["all"][label]
                     for s in data.SPLITS}
        assert per_split["train"] == pytest.approx(0.8, abs=0.03)


def test_cmu_book_summaries_counts_match_an_independent_recount(shared_dir, tmp_path):
    source = shared_dir / "data" / "cmu_book_summaries.jsonl.gz"
    report, df, labels = run_real(source, tmp_path / "cmu")
    expected = expected_counts(source, 0.01)
    assert expected["rows_in"] == 12841 and expected["labels_in"] == 227    # as ../shared/README.md states
    for key, value in expected.items():
        assert report[key] == value, key
    assert report["labels_out"] == 21            # DESIGN.md: "genres >= 1% -> 21 labels"
    assert len(df) == report["rows_out"]
    assert_contract(df, labels, report)


def test_stackoverflow_titles_counts_match_an_independent_recount(shared_dir, tmp_path):
    source = shared_dir / "data" / "stackoverflow_titles.jsonl.gz"
    report, df, labels = run_real(source, tmp_path / "so")
    expected = expected_counts(source, 0.01, keep=r"[^\w+#]+")   # the stage keeps + and # (C++, C#)
    assert expected["rows_in"] == 30000 and expected["labels_in"] == 100
    for key, value in expected.items():
        assert report[key] == value, key
    assert_contract(df, labels, report)


def test_a_closed_stdout_and_stderr_pipe_keeps_the_prepared_output(tmp_path):
    """`python -m training.prepare ... 2>&1 | head -c 1`: the reader goes away after one byte; the settings, the
    progress and the summary have nowhere to go, and the prepared folder is still written and exit is 0."""
    src, out = write_csv(tmp_path / "in.csv", books(240)), tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "training.prepare", "--input", str(src), "--out", str(out)],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.stdout.read(1)
    proc.stdout.close()
    assert proc.wait(timeout=180) == 0
    df, labels = dataset.load_prepared(out)
    assert len(df) > 100 and labels and json.loads((out / "report.json").read_text())["rows_out"] == len(df)


def test_min_words_drops_placeholder_texts_before_they_merge(tmp_path):
    import pandas as pd

    from training.data import drop_short_text

    df = pd.DataFrame({"text": ["To be added.", "To be added.", "A real description of a long quest for a crown."],
                       "labels": [["A"], ["B"], ["A"]]})
    out, facts = drop_short_text(df, 5)
    assert out["text"].tolist() == ["A real description of a long quest for a crown."]
    assert facts == {"dropped": 2, "min_words": 5}


# --------------------------------------------------------------------------------------------------------
# hostile content: every file read back exactly
# --------------------------------------------------------------------------------------------------------
HOSTILE = ['comma, and "quotes"', "cr\ronly", "lf\nonly", "crlf\r\nend", "nul\x00byte", "\ufeffBOM first",
           "tab\there", "line sep\u2028 next line\x85 file sep\x1c group\x1d record\x1e", "=cmd|' /C calc'!A0",
           "  spaces  ", "", "'single' \\backslash\\ », «»"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_file_prepare_writes_reads_back_exactly_whatever_the_content(tmp_path, fmt):
    """\\r, \\n, NUL, quotes, a BOM, U+2028/U+0085/\\x1c-\\x1e in any column: dataset.csv, labels.json and
    report.json read back exactly through load_prepared, the csv module and pandas."""
    rows = books(40)[:40]
    for i, row in enumerate(rows):
        hostile = HOSTILE[i % len(HOSTILE)]
        row["title"] = f"{hostile} #{i}" if i % 3 else hostile   # some titles are exactly the hostile string
        row["text"] += " " + hostile
        if i % 4 == 0:
            row["labels"] = row["labels"] + ['Say "hi", » you']
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        with src.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["url", "title", "text", "labels"], quoting=csv.QUOTE_ALL)
            writer.writeheader()
            writer.writerows({**r, "labels": json.dumps(r["labels"], ensure_ascii=False)} for r in rows)
    else:   # raw \x1c-\x1e inside strings too (json.dumps escapes them; some producers do not)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        src.write_text(text.replace("\\u001c", "\x1c").replace("\\u001d", "\x1d").replace("\\u001e", "\x1e"),
                       encoding="utf-8")
    out = tmp_path / "out"
    result = cli("--input", str(src), "--out", str(out), "--min-label-freq", "1", "--dedup", "none", "--quiet")
    assert result.returncode == 0, result.stderr

    expected = {r["url"]: {"title": r["title"], "text": data.normalise_text(r["text"]),
                           "labels": data.parse_labels_cell(r["labels"], "test")} for r in rows}
    df, labels = dataset.load_prepared(out)                      # the project's own reader
    with (out / "dataset.csv").open(newline="", encoding="utf-8") as f:
        plain = list(csv.DictReader(f))                       # the csv module
    frame = pd.read_csv(out / "dataset.csv", dtype=str, keep_default_na=False)   # pandas
    for name, got_rows in (("load_prepared", df.to_dict("records")), ("csv", plain), ("pandas", frame.to_dict("records"))):
        got = {r["url"]: {"title": r["title"], "text": r["text"],
                          "labels": r["labels"] if isinstance(r["labels"], list) else json.loads(r["labels"])}
               for r in got_rows}
        assert got == expected, name
    assert json.loads((out / "labels.json").read_text(encoding="utf-8")) == {x: i for i, x in enumerate(labels)}
    assert 'Say "hi", » you' in labels
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["rows_out"] == len(rows) and report["labels_out"] == len(labels)


def test_columns_named_like_the_outputs_own_are_kept_under_source_names_never_lost(tmp_path, capsys):
    """Every column of the stage's own names comes back as source_<name> with its cells; a file that already has
    that source_ name is refused (one of the two would vanish)."""
    own = ["labels", "split", "_line", "_parts"]
    header = ["title", *own, "id"]
    rows = [[f"book number {i} about dragons", '["A"]', f"s{i}", f"l{i}", f"p{i}", str(i)] for i in range(6)]
    src = tmp_path / "own.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])
    args = ["--text-col", "title", "--quiet", "--min-label-freq", "1", "--split", "1", "0", "0"]
    assert main(["--input", str(src), "--out", str(tmp_path / "out"), *args]) == 0
    with open(tmp_path / "out" / "dataset.csv", newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert sorted((r["source_split"], r["source__line"], r["source__parts"], r["id"]) for r in got) == sorted(
        (f"s{i}", f"l{i}", f"p{i}", str(i)) for i in range(6))
    with open(src, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([[*header, "source_split"], *[[*r, "x"] for r in rows]])
    capsys.readouterr()
    assert main(["--input", str(src), "--out", str(tmp_path / "out2"), *args]) == 2
    assert "column 'split' is kept as 'source_split'" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
