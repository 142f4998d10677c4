"""Are the evidence spans faithful? ERASER's comprehensiveness test, per span unit, with the latency it adds.

    python -m bench.explain --bundle models/cmu_book_summaries/bundle --rows 200
    python -m bench.explain --bundle models/books/bundle --units sentence words --max-spans 8 16

For each test text and each label the bundle predicts for it, the label's evidence spans (deployment/explain.py,
occlusion on the served model) are ranked by weight and the top ones deleted: the top 1, the top 3, and as many
as cover 20% of the text's words. The text is scored again and the drop in that label's score recorded. The same
number of words is then deleted at random (runs of the same word counts as the evidence spans, at uniformly
random non-overlapping places; `--draws` draws with a fixed seed) and the drop recorded. Faithful evidence makes
the first drop much larger than the second: the table reports both mean drops and their ratio, for every span
unit (sentences, clauses, word chunks) and cap on spans. Latency: the time explaining adds to one text at batch
1 (its `max_spans` variants scored), median over short (~20 words) and long (~500 words) texts.

Data: the test split of the bundle's own data set (bundle.json `source_dataset`, a `training.prepare` folder), or
`--data`. Prints a markdown table and writes JSON (default bench/results/explain.json).
"""
from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import config
from bench import run_and_report
from deployment import explain
from deployment.cli_types import positive_int
from deployment.predictor import BundleError, Predictor
from deployment.scoring import decide

OUT = config.ROOT / "bench" / "results" / "explain.json"
DEFAULT_BUNDLE = config.MODELS_DIR / "cmu_book_summaries" / "bundle"
SHARE = 0.2            # the third deletion: top spans until they cover this share of the text's words
SHORT_WORDS, LONG_WORDS = 20, 500   # words of the latency texts
CHUNK = 8              # texts explained per scoring call (bounded memory, progress shown)
WORD = re.compile(r"\S+")


class DataError(ValueError):
    """The data set cannot be read (the message names it)."""


# ---------------------------------------------------------------------------------------------- data
def dataset_dir(data: Path | None, pred: Predictor) -> Path:
    """`--data` (a training.prepare folder or its dataset.csv), else the folder bundle.json names."""
    source = data or pred.info.get("source_dataset")
    if not source:
        raise DataError(f"{pred.source}/bundle.json names no source_dataset; pass --data (a training.prepare folder)")
    path = Path(source)
    if not path.is_absolute() and not path.exists():   # training records the path it was given
        path = config.ROOT / path
    return path.parent if path.name == "dataset.csv" else path


def read_split_texts(folder: Path, split: str, n: int, seed: int) -> list[str]:
    """`n` texts of `split` drawn with `seed` (all of them when there are fewer), in file order, read by the data
    set's own reader (`training.dataset`)."""
    from training.data import PrepareError
    from training.dataset import read_split

    try:
        texts = read_split(folder, split, []).texts
    except PrepareError as exc:
        raise DataError(f"{exc} (pass --data: a training.prepare folder or its dataset.csv)") from exc
    if not texts:
        raise DataError(f"{folder / 'dataset.csv'}: no rows with split {split!r}")
    keep = sorted(random.Random(seed).sample(range(len(texts)), min(n, len(texts))))
    return [texts[i] for i in keep]


def latency_texts(texts: list[str], n: int) -> dict[str, list[str]]:
    """Short texts (their first SHORT_WORDS words) and long ones (LONG_WORDS words, a text repeated if needed)."""
    def cut(text: str, words: int) -> str:
        spans = [m.span() for m in WORD.finditer(text)]
        while len(spans) < words:
            text = f"{text} {text}"
            spans = [m.span() for m in WORD.finditer(text)]
        return text[:spans[words - 1][1]]

    longest = sorted(texts, key=lambda t: -len(WORD.findall(t)))[:n]
    return {"short": [cut(t, SHORT_WORDS) for t in texts[:n]], "long": [cut(t, LONG_WORDS) for t in longest]}


# ---------------------------------------------------------------------------------------------- deletions
def words_in(words: list[tuple[int, int]], span: tuple[int, int]) -> int:
    """Words of the text that overlap `span` (at least 1: a span is never whitespace only)."""
    return max(1, sum(1 for s, e in words if s < span[1] and e > span[0]))


def top_sets(order: list[int], spans: list, words: list) -> dict[str, list[int]]:
    """The evidence deletions: top 1, top 3, and the top spans covering SHARE of the words."""
    covered, share = 0, []
    for i in order:
        share.append(i)
        covered += words_in(words, spans[i])
        if covered >= SHARE * len(words):
            break
    return {"top1": order[:1], "top3": order[:3], f"top{int(SHARE * 100)}%": share}


def random_runs(words: list[tuple[int, int]], lengths: list[int], rng: random.Random) -> list[tuple[int, int]]:
    """Character spans of non-overlapping runs of `lengths` words at uniformly random places (stars and bars)."""
    lengths = lengths[:]
    rng.shuffle(lengths)
    free = len(words) - sum(lengths)
    if free < 0:   # the evidence covers every word (counted with overlaps): delete every word
        return [(words[0][0], words[-1][1])]
    slots = sorted(rng.sample(range(free + len(lengths)), len(lengths)))
    runs, used = [], 0
    for k, (slot, m) in enumerate(zip(slots, lengths)):
        first = slot - k + used
        runs.append((words[first][0], words[first + m - 1][1]))
        used += m
    return runs


# ---------------------------------------------------------------------------------------------- measuring
def comprehensiveness(pred: Predictor, texts: list[str], probs: np.ndarray, unit: str, max_spans: int,
                      draws: int, seed: int, progress) -> dict:
    """Mean drop of each predicted label's score when its top evidence is deleted, and when as many words
    are deleted at random; per deletion size."""
    thresholds = np.asarray(pred.thresholds)
    rng = random.Random(seed)
    drops: dict[str, dict[str, list[float]]] = {}
    deleted: dict[str, list[float]] = {}
    n_spans = []
    for c in range(0, len(texts), CHUNK):
        chunk = texts[c:c + CHUNK]
        explained = explain.explain_texts(pred.scores, chunk, probs[c:c + CHUNK], unit, max_spans)
        variants, keys = [], []
        for i, (text, (spans, weights)) in enumerate(zip(chunk, explained)):
            n_spans.append(len(spans))
            words = [m.span() for m in WORD.finditer(text)]
            for j in np.flatnonzero(decide(probs[c + i], thresholds)):
                for name, chosen in top_sets(explain.ranked(weights[:, j]), spans, words).items():
                    picked = [spans[s] for s in chosen]
                    lengths = [words_in(words, s) for s in picked]
                    deleted.setdefault(name, []).append(sum(lengths) / len(words))
                    variants.append(explain.delete(text, picked))
                    keys.append((c + i, j, name, "evidence"))
                    for _ in range(draws):
                        variants.append(explain.delete(text, random_runs(words, lengths, rng)))
                        keys.append((c + i, j, name, "random"))
        if variants:
            scored = pred.scores(variants)
            for (row, j, name, kind), p in zip(keys, scored):
                drops.setdefault(name, {"evidence": [], "random": []})[kind].append(float(probs[row, j] - p[j]))
        progress(len(chunk))
    return {"mean_spans": float(np.mean(n_spans)), "deletions": {
        name: {"evidence_drop": float(np.mean(d["evidence"])), "random_drop": float(np.mean(d["random"])),
               "ratio": float(np.mean(d["evidence"]) / np.mean(d["random"])) if np.mean(d["random"]) > 0 else None,
               "words_deleted": float(np.mean(deleted[name])), "instances": len(d["evidence"])}
        for name, d in drops.items()}}


def added_latency_ms(pred: Predictor, texts: list[str], unit: str, max_spans: int) -> float:
    """Median milliseconds explaining adds to one text at batch 1 (its variants scored, evidence listed)."""
    times = []
    for text in texts:
        probs = pred.scores([text])
        t0 = time.perf_counter()
        (spans, weights), = explain.explain_texts(pred.scores, [text], probs, unit, max_spans)
        for j in range(weights.shape[1]):
            explain.evidence(text, spans, weights[:, j])
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _progress(total: int, what: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with the training requirements
        return lambda n: None, lambda: None
    bar = tqdm(total=total, unit="text", desc=what, file=sys.stderr)
    return bar.update, bar.close


def run(bundle: Path, data: Path | None, split: str, rows: int, units: list[str], caps: list[int], draws: int,
        n_latency: int, seed: int, threads: int | None) -> dict:
    pred = Predictor.from_bundle(bundle, num_threads=threads)
    folder = dataset_dir(data, pred)
    texts = read_split_texts(folder, split, rows, seed)
    probs = pred.scores(texts)
    predicted = decide(probs, pred.thresholds)
    timed = latency_texts(texts, n_latency)
    pred.scores(timed["short"][:2])   # warm-up: the first runs allocate
    results = []
    for unit in units:
        for max_spans in caps:
            update, close = _progress(len(texts), f"{unit}, <= {max_spans} spans")
            try:
                row = comprehensiveness(pred, texts, probs, unit, max_spans, draws, seed, update)
            finally:
                close()
            row.update(unit=unit, max_spans=max_spans,
                       latency_ms={kind: added_latency_ms(pred, t, unit, max_spans) for kind, t in timed.items()})
            results.append(row)
    return {"bundle": str(bundle), "data": str(folder / "dataset.csv"), "split": split, "texts": len(texts),
            "texts_without_a_predicted_label": int((~predicted.any(axis=1)).sum()),
            "label_instances": int(predicted.sum()), "draws": draws, "seed": seed, "threads": threads,
            "labels": len(pred.labels), "max_length": pred.max_length, "windows": pred.encoder.windows.to_dict(),
            "linear_weight": pred.linear.weight if pred.linear is not None else None,
            "served_unit": explain.DEFAULT_UNIT, "served_max_spans": explain.MAX_SPANS,
            "latency_texts": {kind: {"n": len(t), "mean_words": float(np.mean([len(WORD.findall(x)) for x in t]))}
                              for kind, t in timed.items()},
            "results": results}


def table(result: dict) -> str:
    lines = ["| unit | max spans | spans/text | deleted | words deleted | evidence drop | random drop | ratio | "
             "added ms, short | added ms, long |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        for name, d in r["deletions"].items():
            ratio = f"{d['ratio']:.2f}" if d["ratio"] is not None else "–"
            lines.append(f"| {r['unit']} | {r['max_spans']} | {r['mean_spans']:.1f} | {name} | "
                         f"{100 * d['words_deleted']:.0f}% | {d['evidence_drop']:.4f} | {d['random_drop']:.4f} | "
                         f"{ratio} | {r['latency_ms']['short']:.1f} | {r['latency_ms']['long']:.1f} |")
    lt = result["latency_texts"]
    return "\n".join(lines) + (
        f"\n{result['texts']} {result['split']} texts ({result['texts_without_a_predicted_label']} with no predicted "
        f"label), {result['label_instances']} (text, predicted label) pairs, {result['draws']} random draws each; "
        f"latency: median over {lt['short']['n']} short ({lt['short']['mean_words']:.0f} words) and "
        f"{lt['long']['n']} long ({lt['long']['mean_words']:.0f} words) texts at batch 1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="model bundle folder")
    ap.add_argument("--data", type=Path, default=None,
                    help="a training.prepare folder or its dataset.csv (default: the bundle's source_dataset)")
    ap.add_argument("--split", default="test", help="rows of this split are explained")
    ap.add_argument("--rows", type=positive_int, default=200, help="texts drawn from the split")
    ap.add_argument("--units", nargs="+", choices=explain.UNITS, default=list(explain.UNITS),
                    help="span units to compare")
    ap.add_argument("--max-spans", type=positive_int, nargs="+", default=[explain.MAX_SPANS],
                    help="caps on spans per text to compare")
    ap.add_argument("--draws", type=positive_int, default=3, help="random deletions per evidence deletion")
    ap.add_argument("--latency-texts", type=positive_int, default=8, help="short and long texts timed")
    ap.add_argument("--seed", type=int, default=0, help="seed of the row sample and the random deletions")
    ap.add_argument("--threads", type=positive_int, default=None, help="onnxruntime intra-op threads")
    ap.add_argument("--out", type=Path, default=OUT, help="JSON output")
    a = ap.parse_args(argv)

    def measure(settings: dict) -> dict:
        result = run(settings["bundle"], settings["data"], settings["split"], settings["rows"], settings["units"],
                     sorted(set(settings["max_spans"])), settings["draws"], settings["latency_texts"],
                     settings["seed"], settings["threads"])
        return {**result, "table": table(result)}

    try:
        run_and_report("python -m bench.explain", measure, vars(a), a.out, argv)
    except (BundleError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
