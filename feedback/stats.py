"""What the corrections say, for operators: per model version and label, how often it was confirmed, removed and
added; the labels users proposed; the recent corrections. Read-only; counted in SQL on both backends.

    from feedback.stats import label_stats, recent
    label_stats(engine)   # {"total": n, "model_versions": {version: {"corrections", "with_shown", "labels": {...}}}, ...}
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from feedback.checks import MAX_SUGGESTION_CHARS
from feedback.db import reading
from feedback.models import CHANGES, Correction, CorrectionLabel, LabelSuggestion

UNVERSIONED = "none"            # the key for corrections made against no model (imports)
TOP_SUGGESTIONS = 50


def label_stats(engine: Engine, model_version: str | None = None) -> dict:
    """Counts by model version: corrections, those whose shown set is known, and per label confirmed / removed /
    added (a label's precision in use is confirmed / (confirmed + removed); its misses are the added)."""
    versions: dict[str, dict] = {}
    with reading(engine) as conn:
        per_version = (select(Correction.model_version, func.count(), func.count(Correction.shown))
                       .group_by(Correction.model_version))
        per_label = (select(Correction.model_version, CorrectionLabel.label, CorrectionLabel.change, func.count())
                     .join(Correction, Correction.id == CorrectionLabel.correction_id)
                     .group_by(Correction.model_version, CorrectionLabel.label, CorrectionLabel.change))
        suggested = (select(LabelSuggestion.label, func.count()).group_by(LabelSuggestion.label)
                     .order_by(func.count().desc(), LabelSuggestion.label).limit(TOP_SUGGESTIONS))
        if model_version is not None:
            per_version = per_version.where(Correction.model_version == model_version)
            per_label = per_label.where(Correction.model_version == model_version)
            suggested = (suggested.join(Correction, Correction.id == LabelSuggestion.correction_id)
                         .where(Correction.model_version == model_version))
        for version, n, with_shown in conn.execute(per_version):
            versions[version or UNVERSIONED] = {"corrections": n, "with_shown": with_shown, "labels": {}}
        for version, label, change, n in conn.execute(per_label):
            entry = versions[version or UNVERSIONED]["labels"].setdefault(label, dict.fromkeys(CHANGES, 0))
            entry[change] = n
        suggestions = {label[:MAX_SUGGESTION_CHARS]: n for label, n in conn.execute(suggested)}
    for entry in versions.values():   # most-corrected labels first
        entry["labels"] = dict(sorted(entry["labels"].items(),
                                      key=lambda kv: (-(kv[1]["removed"] + kv[1]["added"]), kv[0])))
    return {"total": sum(v["corrections"] for v in versions.values()), "model_versions": versions,
            "suggested_labels": suggestions}


def recent(engine: Engine, limit: int = 50) -> list[dict]:
    """The newest corrections with what changed, newest first."""
    with reading(engine) as conn:
        rows = conn.execute(select(Correction).order_by(Correction.id.desc()).limit(limit)).all()
        ids = [r.id for r in rows]
        changes: dict[int, dict[str, list[str]]] = {i: {c: [] for c in CHANGES} for i in ids}
        suggestions: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            for cid, label, change in conn.execute(
                    select(CorrectionLabel.correction_id, CorrectionLabel.label, CorrectionLabel.change)
                    .where(CorrectionLabel.correction_id.in_(ids)).order_by(CorrectionLabel.label)):
                changes[cid][change].append(label)
            for cid, label in conn.execute(select(LabelSuggestion.correction_id, LabelSuggestion.label)
                                           .where(LabelSuggestion.correction_id.in_(ids))
                                           .order_by(LabelSuggestion.id)):
                suggestions[cid].append(label)
    return [{"id": r.id, "created": r.created_at, "face": r.face, "token_name": r.token_name,
             "model_version": r.model_version, "text": r.text, "labels": list(r.labels),
             "shown": None if r.shown is None else list(r.shown), **changes[r.id], "suggested": suggestions[r.id]}
            for r in rows]
