"""Corrections into a prepared data set: what the people who use the model said its labels should have been.

    python -m feedback export --out corrections.jsonl
    python -m training.prepare --input data/sample/books.csv --corrections corrections.jsonl --out data/processed/books

`training.prepare --corrections FILE` reads the corrections store's export (JSONL, one row per text: `text`,
`labels`, and passthrough keys; docs/CONTRACTS.md) and merges it into the input after the texts are normalised
and before duplicates are merged:

- a correction **replaces** the labels of its text: every input row with the same text key (the key duplicates
  are merged by: `training.data.dedup_key` with --dedup near, the normalised text otherwise) takes the corrected
  set, so merging duplicates cannot union the old labels back in;
- a corrected text the input does not have **joins** the data as a new row;
- a correction with no labels (`[]`, "no label applies") leaves its text without labels, and the text is dropped
  by the `drop_unlabelled` step like any other unlabelled row (counted here as `without_labels`).

Rows touched by a correction carry the internal column `_corrected`, which the stable split
(training/stable_split.py) uses to hold a share of corrected texts out as the `feedback` slice. Pure functions
over frames; reading the file is `read`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from training import data, rawfiles
from training.data import LINE_COL, PrepareError

CORRECTED_COL = "_corrected"   # internal: the row's labels come from a correction (never written to dataset.csv)


@dataclass(frozen=True)
class Corrections:
    """An exported corrections file, read and normalised, with what the report records about it."""

    frame: pd.DataFrame      # text (normalised), labels (normalised lists), _line
    facts: dict              # file, sha256, rows, manifest (the export's manifest beside the file, when present)


def manifest_path(path: Path) -> Path:
    """The export's manifest beside it: corrections.jsonl -> corrections.manifest.json (feedback.exchange's rule)."""
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def read(path: str | Path, progress: bool = False) -> Corrections:
    """Read the export (JSONL with `text` and `labels`); PrepareError names the line of a bad row."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".ndjson") and not path.name.lower().endswith(".jsonl.gz"):
        raise PrepareError(f"{path}: --corrections takes the JSONL that `python -m feedback export` writes")
    raw = rawfiles.read_records(path, ("text",), "labels", "jsonl", progress)
    frame, _ = data.normalise_texts(raw.frame)
    frame = frame[[c for c in ("text", "labels", LINE_COL) if c in frame]]
    empty = frame["text"].str.len() == 0
    if empty.any():
        line = int(frame.loc[empty, LINE_COL].iloc[0])
        raise PrepareError(f"{path} line {line}: a correction without text; re-export the corrections")
    facts = {"file": str(path), "sha256": hashlib.sha256(raw.raw_bytes).hexdigest(), "rows": int(len(frame))}
    manifest = manifest_path(path)
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise PrepareError(f"{manifest}: not a JSON manifest ({err}); re-export the corrections") from None
        if m.get("sha256") != facts["sha256"]:
            raise PrepareError(f"{manifest} describes another file (sha256 {str(m.get('sha256'))[:12]}..., "
                               f"{path.name} has {facts['sha256'][:12]}...); re-export the corrections")
        facts["manifest"] = {k: m.get(k) for k in ("rows", "corrections", "conflicts", "time_range",
                                                   "model_versions", "created")}
        facts["manifest"]["conflicts"] = (m.get("conflicts") or {}).get("texts")
    return Corrections(frame.reset_index(drop=True), facts)


def text_keys(texts: pd.Series, dedup: str) -> pd.Series:
    """The key two rows are "the same text" by: the dedup key with --dedup near, the whitespace-collapsed text
    otherwise (the texts are normalised already)."""
    if dedup == "near":
        return texts.map(data.dedup_key)
    return texts.map(lambda t: " ".join(t.split()))


def merge(df: pd.DataFrame, corrections: Corrections, dedup: str = "near") -> tuple[pd.DataFrame, dict]:
    """The input with each corrected text's labels replaced and the new texts appended (a `prepare` step)."""
    corr = corrections.frame
    keys = text_keys(corr["text"], dedup)
    latest = {}   # key -> position in corr: the file is in correction order, so the last one wins
    for pos, key in enumerate(keys):
        latest[key] = pos
    base_keys = text_keys(df["text"], dedup) if len(df) else pd.Series([], dtype=object)
    hit = base_keys.map(lambda k: k in latest).astype(bool) if len(df) else pd.Series([], dtype=bool)
    out = df.copy()
    out["labels"] = pd.Series([list(corr["labels"].iat[latest[k]]) if h else list(lab)
                               for k, h, lab in zip(base_keys, hit, df["labels"])], index=df.index, dtype=object)
    out[CORRECTED_COL] = hit.to_numpy()
    matched = set(base_keys[hit])
    new_pos = [pos for key, pos in latest.items() if key not in matched]
    new = pd.DataFrame({"text": corr["text"].iloc[new_pos].tolist(),
                        "labels": pd.Series([list(corr["labels"].iat[p]) for p in new_pos], dtype=object),
                        LINE_COL: corr[LINE_COL].iloc[new_pos].tolist(), CORRECTED_COL: True})
    merged = pd.concat([out, new], ignore_index=True) if len(new) else out.reset_index(drop=True)
    merged[CORRECTED_COL] = merged[CORRECTED_COL].astype(bool)
    facts = {**corrections.facts,
             "superseded_in_file": int(len(corr) - len(latest)),   # same key twice in the file: the later one won
             "matched_texts": len(matched), "replaced_rows": int(hit.sum()), "new_texts": len(new_pos),
             "without_labels": sum(1 for p in latest.values() if not corr["labels"].iat[p]),
             "labels_changed_rows": int(sum(h and sorted(a) != sorted(b)
                                            for h, a, b in zip(hit, df["labels"], out["labels"])))}
    return merged, facts
