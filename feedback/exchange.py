"""Corrections in and out of the store: `import` a curator's file, `export` what training.prepare reads.

    python -m feedback import corrections.csv [--bundle B]     # CSV (text, labels as a JSON list) or JSONL
    python -m feedback export --out corrections.jsonl          # + corrections.manifest.json beside it

Export writes one JSON object per line, `{"text", "labels", "correction_id", "model_version", "corrected_at",
"corrections"}`: one row per distinct text (feedback.checks.text_key: the same text up to spacing and Unicode
normalisation), the latest correction winning. Texts whose clients disagree (each client's latest label set
differs) are counted and listed in the manifest as conflicts. The manifest records the rows, the time range, the
model versions corrected, and the file's sha256. Both files are written atomically (deployment.files).

Import checks every row first (the predictor's text rules, the label rules, and with --bundle the model's label
set) and stores all of them in one transaction, or none and says which lines are wrong. Each row is keyed by the
file's hash and its line, so importing the same file again stores nothing twice.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import select
from sqlalchemy.engine import Engine

from deployment.files import large_csv_fields, write_bytes, write_text
from deployment.formats import dumps
from feedback.checks import labels_problem, model_order, storable_text_problem
from feedback.db import reading, safe_url, writing
from feedback.models import Correction, utcnow
from feedback.store import NewCorrection, record_many

FORMAT_VERSION = 1
MAX_ERRORS_SHOWN = 20
CONFLICT_EXAMPLES = 50
BATCH = 1000


class ExchangeError(ValueError):
    """An import file that cannot be used (the message names the lines), or an export that cannot be written."""


def manifest_path(out: Path) -> Path:
    """corrections.jsonl -> corrections.manifest.json"""
    return out.with_name(out.name.removesuffix(".jsonl") + ".manifest.json")


def iso(t) -> str | None:
    return None if t is None else t.isoformat(timespec="microseconds") + "Z"


# ---- export ------------------------------------------------------------------------------------------------
@dataclass
class _Text:
    """What export keeps per distinct text while it reads the corrections in order."""

    latest: object
    count: int
    by_client: dict


def export(engine: Engine, out: Path, progress: bool = True, command: str | None = None) -> dict:
    """Write `out` (JSONL) and its manifest; returns the manifest."""
    from tqdm import tqdm

    out = Path(out)
    texts: dict[str, _Text] = {}
    versions, faces = Counter(), Counter()
    first = last = None
    total = 0
    with reading(engine) as conn:
        n = conn.execute(select(Correction.id).order_by(Correction.id.desc()).limit(1)).scalar()
        query = select(Correction).order_by(Correction.id)
        rows = conn.execution_options(yield_per=BATCH).execute(query)
        for row in tqdm(rows, total=n, desc="export", unit="correction", disable=not progress, leave=False):
            total += 1
            versions[row.model_version or "none"] += 1
            faces[row.face] += 1
            first = row.created_at if first is None or row.created_at < first else first
            last = row.created_at if last is None or row.created_at > last else last
            entry = texts.get(row.text_hash)
            if entry is None:
                texts[row.text_hash] = entry = _Text(row, 0, {})
            entry.latest, entry.count = row, entry.count + 1
            entry.by_client[row.client_key] = (row.id, list(row.labels))
    lines, conflicts, n_conflicts, empty = [], [], 0, 0
    for key, entry in sorted(texts.items(), key=lambda kv: kv[1].latest.id):
        row = entry.latest
        lines.append(json.dumps({"text": row.text, "labels": list(row.labels), "correction_id": row.id,
                                 "model_version": row.model_version, "corrected_at": iso(row.created_at),
                                 "corrections": entry.count}, ensure_ascii=False))
        empty += not row.labels
        sets = {tuple(sorted(labels)) for _, labels in entry.by_client.values()}
        if len(sets) > 1:
            n_conflicts += 1
            if len(conflicts) < CONFLICT_EXAMPLES:
                conflicts.append({"text_hash": key, "clients": len(entry.by_client), "kept": list(row.labels),
                                  "label_sets": sorted(list(s) for s in sets),
                                  "correction_ids": sorted(i for i, _ in entry.by_client.values())})
    body = ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
    manifest = {
        "format_version": FORMAT_VERSION, "file": out.name, "sha256": hashlib.sha256(body).hexdigest(),
        "bytes": len(body), "rows": len(lines), "rows_without_labels": empty, "corrections": total,
        "superseded": total - len(lines),
        "conflicts": {"texts": n_conflicts, "examples": conflicts},
        "time_range": {"first": iso(first), "last": iso(last)},
        "model_versions": dict(versions.most_common()), "faces": dict(faces.most_common()),
        "database": safe_url(str(engine.url)), "created": iso(utcnow()),
        "command": command or " ".join(sys.argv),
    }
    write_bytes(out, body)
    write_text(manifest_path(out), dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


# ---- import ------------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[tuple[int, object, object]]:
    """(line, text, labels) of a CSV (`text`, `labels` a JSON list) or JSONL (`text`, `labels` a list) file."""
    if not path.is_file():
        raise ExchangeError(f"{path}: file not found")
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ExchangeError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(content.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                raise ExchangeError(f"{path} line {number}: not a JSON object") from None
            if not isinstance(obj, dict) or "text" not in obj or "labels" not in obj:
                raise ExchangeError(f'{path} line {number}: each line must look like {{"text": "...", "labels": [...]}}')
            rows.append((number, obj["text"], obj["labels"]))
        return rows
    with large_csv_fields():
        reader = csv.reader(io.StringIO(content, newline=""))
        header = next(reader, None)
        if not header or "text" not in header or "labels" not in header:
            raise ExchangeError(f"{path} line 1: the header must have `text` and `labels` columns (found: {header})")
        ti, li = header.index("text"), header.index("labels")
        rows = []
        for record in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                raise ExchangeError(f"{path} line {number}: {len(record)} fields, the header has {len(header)}")
            try:
                labels = json.loads(record[li]) if record[li].strip() else []
            except ValueError:
                labels = record[li]   # labels_problem says what is wrong
            rows.append((number, record[ti], labels))
        return rows


def check_rows(rows: Sequence[tuple[int, object, object]], known: Sequence[str] | None) -> list[str]:
    """Every problem, as 'line N: ...' (empty when all rows can be stored)."""
    from deployment.predictor import Predictor   # the predictor's own text rules (imported only to import)

    problems = []
    for number, text, labels in rows:
        text_problem = Predictor.text_problem(text) or storable_text_problem(text)
        if text_problem:
            problems.append(f"line {number}: the text {text_problem}")
        elif problem := labels_problem(labels, known):
            problems.append(f"line {number}: {problem}")
    return problems


def import_file(engine: Engine, path: Path, known: Sequence[str] | None = None,
                model_version: str | None = None) -> dict:
    """Store every row of `path` or none; returns {"rows", "stored", "skipped", "ids"}."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise ExchangeError(f"{path}: no rows to import")
    problems = check_rows(rows, known)
    if problems:
        shown = "\n  ".join(problems[:MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_ERRORS_SHOWN} more" if len(problems) > MAX_ERRORS_SHOWN else ""
        raise ExchangeError(f"{path}: {len(problems)} of {len(rows)} rows cannot be imported, so none was:\n  {shown}{more}")
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    corrections = [NewCorrection(text=text, labels=model_order(labels, known), face="import", client_key="import",
                                 client_ref=f"{file_hash}:{number}", model_version=model_version)
                   for number, text, labels in rows]
    with writing(engine, lock_key="import") as conn:
        ids, skipped = record_many(conn, corrections)
    return {"rows": len(rows), "stored": len(ids), "skipped": skipped, "ids": ids}
