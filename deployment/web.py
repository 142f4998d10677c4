"""What the two web front ends share: the text length limit and the colour display read from bundle.json.

    from deployment.web import MAX_TEXT_CHARS, label_colors, length_problem, reading, truncation_notice
    from deployment.web import highlights, segments

The Flask site (flask_app/) and the Gradio app (deployment/app.py) both import this; the Gradio app does so
from inside a Hugging Face Space too, so it lives in deployment/ and needs nothing but the standard library.
Whether a text can be classified at all (a string, not empty, valid Unicode) is the predictor's rule
(`Predictor.text_problem`); the length limit is a web one: the batch CLI reads texts of any length.
"""
from __future__ import annotations

import re

MAX_TEXT_CHARS = 20_000                     # longer texts are refused with a message: a description, not a novel
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")  # the only colour syntax let into a page (no CSS injection)
# Highlight colours, one per predicted label (light enough for dark text: contrast 11:1 to 12.5:1 with the ink #1d2330). The
# Flask site has the same eight as CSS classes ev-0 .. ev-7 in flask_app/static/style.css (no inline styles).
EVIDENCE_PALETTE = ("#ffe08a", "#b8e0ff", "#c4efc0", "#ffc9de", "#e0d2ff", "#ffd2ad", "#b5efe8", "#e9e9a6")
HIGHLIGHTS_PER_LABEL = 3                    # evidence spans highlighted per predicted label (the strongest)


def length_problem(text: str, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Why `text` is too long for a web request, as the end of a sentence ("is 20,001 characters long ..."); None when it fits."""
    if len(text) > limit:
        return f"is {len(text):,} characters long; the limit is {limit:,}"
    return None


def label_colors(info: dict) -> dict[str, str]:
    """`label_colors` when bundle.json asks for colour display (`label_display: "colors"`); any value that is
    not a #rrggbb string is dropped, never passed into a page."""
    if info.get("label_display") != "colors" or not isinstance(info.get("label_colors"), dict):
        return {}
    return {str(k): v for k, v in info["label_colors"].items() if isinstance(v, str) and COLOR_RE.match(v)}


def reading(max_length: int, windows: dict | None) -> str:
    """How much of a text the model reads, for a page footer: "up to 256 tokens" or "8 windows of 256 tokens"."""
    cap = int((windows or {}).get("max_windows", 1))
    return f"up to {cap} windows of {max_length} tokens" if cap > 1 else f"up to {max_length} tokens"


def truncation_notice(result: dict, max_length: int, windows: dict | None) -> str | None:
    """A sentence for a result whose text the model did not read whole (`truncated`), else None."""
    if not result.get("truncated"):
        return None
    n_tokens = result.get("n_tokens", "?")
    if int((windows or {}).get("max_windows", 1)) > 1:
        return (f"The text is longer than the model reads ({n_tokens} tokens; it reads {result.get('n_windows', '?')} "
                f"windows of {max_length} tokens), so the prediction is based on the part that fits.")
    return (f"The text is longer than the model reads ({n_tokens} tokens; it reads {max_length}), so the "
            "prediction is based on the part that fits.")


def highlights(result: dict, per_label: int = HIGHLIGHTS_PER_LABEL) -> list[dict]:
    """What a page highlights for one `predict(..., explain=True)` answer: each predicted label (the first
    len(EVIDENCE_PALETTE) by score) with its colour index and the spans that push it up most,
    `[{"label", "color", "spans": [(start, end, weight), ...]}, ...]`."""
    chosen = [x for x in result.get("labels", []) if x.get("predicted") and x.get("evidence")]
    out = []
    for color, item in enumerate(chosen[:len(EVIDENCE_PALETTE)]):
        spans = [(e["start"], e["end"], e["weight"]) for e in item["evidence"] if e["weight"] > 0][:per_label]
        if spans:
            out.append({"label": item["label"], "color": color, "spans": spans})
    return out


def segments(text: str, marked: list[dict]) -> list[dict]:
    """`text` cut at every highlighted span's start and end, in order: `[{"text", "start", "end", "labels"}]`,
    `labels` being `[{"label", "color", "weight"}]` for each `highlights()` entry with a span covering the
    segment (none: plain text). Spans of different labels may overlap; segments never do, so they render as
    flat, valid markup."""
    cuts = sorted({0, len(text)} | {i for h in marked for s, e, _ in h["spans"] for i in (s, e)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        covering = [{"label": h["label"], "color": h["color"], "weight": w}
                    for h in marked for s, e, w in h["spans"] if s <= a and b <= e]
        out.append({"text": text[a:b], "start": a, "end": b, "labels": covering})
    return out
