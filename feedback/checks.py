"""The rules a correction must pass before it is stored, as pure functions (no database, no model loaded).

Each `*_problem` returns why a value is refused, or None; the faces turn a reason into a 4xx with that message.
Whether a text can be classified at all is the predictor's rule (`Predictor.text_problem`) and its length the
web's (`deployment.web.length_problem`); this module adds what storing needs (no NUL: PostgreSQL text cannot hold
it) and the rules of the label set, the suggestions, the client reference and the rate.

    from feedback.checks import labels_problem, label_changes, text_key, parse_rate
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

MAX_SUGGESTIONS = 20            # proposed new labels per correction
MAX_SUGGESTION_CHARS = 100
MAX_CLIENT_REF_CHARS = 200
MAX_LABELS_LISTED = 10          # names quoted in one error message
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
CLIENT_REF = re.compile(r"^[\x21-\x7e]{1,200}$")   # printable ASCII, no spaces: an id, not prose
CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*(second|minute|hour|day)\s*$")
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """At most `limit` stored corrections per client in any `seconds`-long window."""

    limit: int
    seconds: int

    def __str__(self) -> str:
        unit = {v: k for k, v in UNITS.items()}[self.seconds]
        return f"{self.limit}/{unit}"


def parse_rate(value: str) -> Rate | None:
    """'120/minute' -> Rate(120, 60); 'off' -> None (no limit); anything else ValueError with the accepted form."""
    if value.strip().lower() in ("off", "none", "0"):
        return None
    m = RATE.match(value)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"a rate looks like 120/minute (N per second, minute, hour or day) or off; got {value[:40]!r}")
    return Rate(int(m.group(1)), UNITS[m.group(2)])


def text_key(text: str) -> str:
    """sha256 of the text with Unicode NFC and runs of whitespace made one space (ends stripped): two submissions
    of one text that differ only in line endings or spacing are the same text for `export`."""
    normal = " ".join(unicodedata.normalize("NFC", text).split())
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def storable_text_problem(text: str) -> str | None:
    """What storing adds to the predictor's rules (run those first): PostgreSQL text cannot hold NUL."""
    if "\x00" in text:
        return f"holds a NUL character (at character {text.index(chr(0))}), which the corrections store cannot keep"
    return None


def _names(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v[:60]) for v in values[:MAX_LABELS_LISTED])
    return shown + (f" and {len(values) - MAX_LABELS_LISTED} more" if len(values) > MAX_LABELS_LISTED else "")


def labels_problem(labels: Any, known: Sequence[str] | None) -> str | None:
    """`labels` must be a list of distinct strings, each one of `known` (the model's labels; None: any label)."""
    if not isinstance(labels, list):
        return f'"labels" must be a list of label names (the full correct set, [] for none), got {type(labels).__name__}'
    bad = [x for x in labels if not isinstance(x, str)]
    if bad:
        return f'"labels" must hold strings only, found {type(bad[0]).__name__}'
    if any(CONTROL.search(x) or not x.strip() for x in labels):
        return '"labels" holds an empty name or one with control characters or lone surrogates'
    seen, twice = set(), set()
    for x in labels:
        if x in seen:
            twice.add(x)
        seen.add(x)
    if twice:
        return f'"labels" lists {_names(sorted(set(twice)))} more than once'
    if known is not None:
        unknown = [x for x in labels if x not in set(known)]
        if unknown:
            return (f'"labels" holds {len(unknown)} label(s) the model does not have: {_names(unknown)}; '
                    'propose new labels in "suggested_labels"')
    return None


def suggestions_problem(suggested: Any, known: Sequence[str]) -> str | None:
    """Proposed new labels: a list of up to MAX_SUGGESTIONS short names, none of them already a model label."""
    if not isinstance(suggested, list):
        return f'"suggested_labels" must be a list of strings, got {type(suggested).__name__}'
    if len(suggested) > MAX_SUGGESTIONS:
        return f'"suggested_labels" has {len(suggested)} names; the limit is {MAX_SUGGESTIONS}'
    for x in suggested:
        if not isinstance(x, str) or not x.strip():
            return '"suggested_labels" must hold non-empty strings'
        if len(x) > MAX_SUGGESTION_CHARS:
            return f'a suggested label is {len(x)} characters long; the limit is {MAX_SUGGESTION_CHARS}'
        if CONTROL.search(x):
            return '"suggested_labels" holds a name with control characters or lone surrogates'
    existing = [x for x in suggested if x.strip() in set(known)]
    if existing:
        return f'{_names(existing)} already a label of the model: put it in "labels", not "suggested_labels"'
    return None


def client_ref_problem(ref: Any) -> str | None:
    if ref is None:
        return None
    if not isinstance(ref, str) or not CLIENT_REF.match(ref):
        return (f'"client_ref" must be 1 to {MAX_CLIENT_REF_CHARS} printable ASCII characters without spaces '
                '(your own id for this correction; resending it returns the stored one)')
    return None


def token_name_problem(name: str) -> str | None:
    if not TOKEN_NAME.match(name or ""):
        return "a token name is 1 to 64 letters, digits and _ . @ - (starting with a letter or digit)"
    return None


def label_changes(shown: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """Each label's change relative to what was shown: confirmed (shown, kept), removed, added."""
    kept = set(labels)
    out = {x: ("confirmed" if x in kept else "removed") for x in shown}
    out.update({x: "added" for x in labels if x not in set(shown)})
    return out


def model_order(labels: Sequence[str], known: Sequence[str] | None) -> list[str]:
    """`labels` in the model's label order (the order a prediction lists them); as given without a model."""
    if known is None:
        return list(labels)
    index = {x: i for i, x in enumerate(known)}
    return sorted(labels, key=index.__getitem__)
