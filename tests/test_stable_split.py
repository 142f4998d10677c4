"""Stable splits and corrections through `python -m training.prepare` (in-process `main`, real files).

A property over random data sets: re-preparing into the same --out with 10% more texts, and with corrections of
old and new texts, keeps every old text in its old split; only new texts are assigned; a share of new corrected
texts goes to `feedback`; a correction replaces its text's labels; train holds every label; the files read back
through the project's readers, and training and compression read the train/valid/test rows only.
"""
from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

from training.prepare import main

WORDS = ("dragon wizard sword quest murder clue alibi kiss wedding letters starship robot galaxy ghost crypt curse "
         "river mountain winter harbour orchard library lantern storm").split()


def random_books(rng: random.Random, n: int, labels: list[str], start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        chosen = rng.sample(labels, rng.choice([1, 1, 2, 3]))
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 20))]
        rows.append({"url": f"https://books.example/{i}", "text": f"Book {i}: " + " ".join(words) + ".",
                     "labels": json.dumps(chosen)})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["url", "text", "labels"], quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_dataset(out: Path) -> dict[str, tuple[str, list[str]]]:
    with open(out / "dataset.csv", newline="", encoding="utf-8") as fh:
        return {r["text"]: (r["split"], json.loads(r["labels"])) for r in csv.DictReader(fh)}


def test_re_preparing_with_more_texts_and_corrections_keeps_every_old_text_in_its_split(tmp_path):
    from compression.report import load_eval_texts
    from training.dataset import load_prepared
    from training.dataset import read_splits

    for case in range(10):
        rng = random.Random(case)
        labels = [f"L{j}" for j in range(rng.randint(3, 9))]
        n = rng.randint(80, 260)
        base = random_books(rng, n, labels)
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        out = folder / "processed"
        args = ["--out", str(out), "--min-label-freq", "1", "--quiet", "--seed", str(case)]
        assert main(["--input", str(write_csv(folder / "base.csv", base)), *args]) == 0
        before = read_dataset(out)

        grown = base + random_books(rng, n // 10, labels, start=n)   # 10% more texts
        old = rng.sample(base, 8)
        fixes = [{"text": r["text"], "labels": rng.sample(labels, 2)} for r in old]       # relabelled old texts
        fresh = [{"text": f"Fresh {i}: " + " ".join(rng.choice(WORDS) for _ in range(8)), "labels": rng.sample(labels, 1)}
                 for i in range(rng.randint(10, 40))]                                       # new texts from users
        corrections = folder / "corrections.jsonl"
        corrections.write_text("".join(json.dumps(c) + "\n" for c in fixes + fresh), encoding="utf-8")
        assert main(["--input", str(write_csv(folder / "grown.csv", grown)), "--corrections", str(corrections),
                     "--feedback-share", "0.25", *args]) == 0
        after = read_dataset(out)

        moved = {t: (before[t][0], after[t][0]) for t in before if after[t][0] != before[t][0]}
        assert moved == {}, (case, list(moved.items())[:3])
        assert set(after) == set(before) | {r["text"] for r in grown} | {c["text"] for c in fresh}
        for c in fixes + fresh:
            assert sorted(after[c["text"]][1]) == sorted(c["labels"]), case   # a correction replaces the labels
        fresh_splits = Counter(after[c["text"]][0] for c in fresh)
        assert 0.1 * len(fresh) <= fresh_splits["feedback"] <= 0.45 * len(fresh), (case, fresh_splits)
        assert all(split != "feedback" for text, (split, _) in after.items() if text.startswith("Book")), case
        train_labels = {x for split, labs in after.values() if split == "train" for x in labs}
        assert train_labels == {x for _, labs in after.values() for x in labs}, case

        report = json.loads((out / "report.json").read_text())
        split_step = next(s for s in report["steps"] if s["step"] == "split")
        assert split_step["stable"]["kept"] == len(before) and split_step["sizes"]["feedback"] == fresh_splits["feedback"]
        df, _ = load_prepared(out)
        assert Counter(df["split"]) == Counter(split for split, _ in after.values())
    splits = read_splits(out)   # training reads train/valid/test and leaves feedback out
    assert sum(map(len, splits.texts.values())) == sum(split != "feedback" for split, _ in after.values())
    evaluated = load_eval_texts(out, sorted(train_labels))
    assert len(evaluated.texts) == sum(split == "test" for split, _ in after.values())


def test_resplit_and_a_bad_corrections_file_are_explicit(tmp_path, capsys):
    rng = random.Random(7)
    labels = ["A", "B", "C"]
    source = write_csv(tmp_path / "base.csv", random_books(rng, 120, labels))
    out = tmp_path / "processed"
    args = ["--input", str(source), "--out", str(out), "--min-label-freq", "1", "--quiet"]
    assert main(args) == 0
    first = read_dataset(out)
    assert main([*args, "--seed", "3"]) == 0
    assert read_dataset(out) == first            # a rerun keeps the split, whatever the seed
    assert main([*args, "--seed", "3", "--resplit"]) == 0
    assert read_dataset(out) != first            # --resplit starts over
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "x", "labels": "A"}\n', encoding="utf-8")
    assert main([*args, "--corrections", str(bad)]) == 2
    assert "c.jsonl line 1" in capsys.readouterr().err
    (tmp_path / "c.manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
    bad.write_text('{"text": "x", "labels": ["A"]}\n', encoding="utf-8")
    assert main([*args, "--corrections", str(bad)]) == 2
    assert "describes another file" in capsys.readouterr().err
    assert main([*args, "--previous", str(tmp_path / "nowhere")]) == 2
