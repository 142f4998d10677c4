"""Why these labels: evidence spans by occlusion on the served model.

A text is cut into spans (sentences by default; clauses or fixed word chunks on request). Each span is removed
in turn and the text is scored again by the caller's `score(texts) -> probabilities [n, labels]`, which is
`Predictor.probabilities`: the same tokenizer, windows, ONNX session and blend with the linear part that
served the prediction, so the evidence explains what was served and nothing else. A span's weight for a label
is the drop in that label's blended score when the span is gone (positive: the span pushes the label up).
Every label gets its weights from the same re-scored texts, so explaining costs at most `max_spans` variants
scored per text, whatever the number of labels.

Memory is bounded by construction: the variants are built and scored in groups of at most CHARS_PER_CALL
characters (one longer variant alone), so only one group is ever tokenised at a time, each call going through
the predictor's own token-capped onnxruntime batches. What explaining adds to a process's peak is one group's
tokens, whatever the number of texts in the request or file; a text longer than the budget costs what plain
prediction of that one text costs. A request whose variants fit in one group is scored in one call.

    from deployment.explain import explain_texts, evidence
    spans, weights = explain_texts(score, texts, probs)[0]          # weights: [n_spans, n_labels]
    evidence(texts[0], spans, weights[:, label_index])              # [{"start", "end", "text", "weight"}, ...]

The cost is bounded: a text with more spans than `max_spans` (MAX_SPANS) has adjacent spans merged into
`max_spans` chunks of similar length, so it never needs more than `max_spans` extra texts scored (each read
as the model reads the original: up to the bundle's cap on windows). Offsets are Python `str` indices (code
points) into the submitted text, and `text == submitted[start:end]` always; spans never start or end in
whitespace. Needs only numpy, so the Space ships it beside predictor.py.
"""
from __future__ import annotations

import heapq
import re
from typing import Callable, Iterator, Sequence

import numpy as np

UNITS = ("sentence", "phrase", "words")   # how a text is cut into the spans that are removed one at a time
DEFAULT_UNIT = "sentence"          # the unit served (chosen with bench/explain.py: see README "Why these labels?")
MAX_SPANS = 16                     # spans per text at most = extra texts scored per explained text
WORDS_PER_CHUNK = 6                # words per span for the "words" unit
EVIDENCE_PER_LABEL = 5             # spans listed per label in a prediction (the largest |weight|)
CHARS_PER_CALL = 262_144           # characters of variants per `score` call (~15 MiB of tokens; a longer one alone)
METHOD = "occlusion"

# A sentence ends after . ! ? … (and closing quotes or brackets) followed by whitespace, after CJK full stops
# (no space follows them), or at a line break of any kind.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？｡]+[」』”’)）]*|\r\n|[\n\r\v\f\x85\u2028\u2029]")
# A clause also ends after , ; : and dashes followed by whitespace (and their CJK forms).
_PHRASE_END = re.compile(_SENTENCE_END.pattern + r"|[,;:—–]+(?=\s)|[，、；：]")
_WORD = re.compile(r"\S+")

Span = tuple[int, int]
Score = Callable[[Sequence[str]], np.ndarray]


def _trimmed(text: str, start: int, end: int) -> Span | None:
    """`[start, end)` without its leading and trailing whitespace; None when nothing else is left."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    lead = len(piece) - len(piece.lstrip())
    return start + lead, start + lead + len(stripped)


def _split_at(text: str, boundary: re.Pattern) -> list[Span]:
    spans, start = [], 0
    for match in boundary.finditer(text):
        span = _trimmed(text, start, match.end())
        if span:
            spans.append(span)
        start = match.end()
    last = _trimmed(text, start, len(text))
    return spans + [last] if last else spans


def _word_chunks(text: str, size: int) -> list[Span]:
    words = [m.span() for m in _WORD.finditer(text)]
    return [(words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)]


def split(text: str, unit: str = DEFAULT_UNIT) -> list[Span]:
    """The text cut into non-overlapping spans, in order: sentences, clauses ("phrase") or chunks of
    WORDS_PER_CHUNK words. Whitespace between spans belongs to none of them."""
    if unit == "sentence":
        return _split_at(text, _SENTENCE_END)
    if unit == "phrase":
        return _split_at(text, _PHRASE_END)
    if unit == "words":
        return _word_chunks(text, WORDS_PER_CHUNK)
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


def cap(spans: Sequence[Span], max_spans: int = MAX_SPANS) -> list[Span]:
    """At most `max_spans` spans: the two adjacent spans that make the shortest merged span are merged, again
    and again, so a long text costs `max_spans` extra texts scored rather than one per sentence, in chunks of
    similar length. A merged span runs from its first span's start to its last span's end (whitespace between
    them included)."""
    if max_spans < 1:
        raise ValueError(f"max_spans must be >= 1, got {max_spans}")
    n = len(spans)
    if n <= max_spans:
        return list(spans)
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    after, before, alive = list(range(1, n + 1)), list(range(-1, n - 1)), [True] * n
    heap = [(ends[i + 1] - starts[i], i) for i in range(n - 1)]   # (length if merged with the next span, span)
    heapq.heapify(heap)
    left = n
    while left > max_spans:
        length, i = heapq.heappop(heap)
        j = after[i]
        if not alive[i] or j >= n or ends[j] - starts[i] != length:
            continue   # stale: span i or its neighbour changed since this entry was pushed
        ends[i], alive[j], after[i] = ends[j], False, after[j]
        if after[i] < n:
            before[after[i]] = i
            heapq.heappush(heap, (ends[after[i]] - starts[i], i))
        if before[i] >= 0:
            heapq.heappush(heap, (ends[i] - starts[before[i]], before[i]))
        left -= 1
    return [(starts[i], ends[i]) for i in range(n) if alive[i]]


def spans_of(text: str, unit: str = DEFAULT_UNIT, max_spans: int = MAX_SPANS) -> list[Span]:
    """The spans removed one at a time to explain `text`."""
    return cap(split(text, unit), max_spans)


def delete(text: str, spans: Sequence[Span]) -> str:
    """`text` with every span replaced by one space (so the words on either side never join into one)."""
    out, last = [], 0
    for start, end in sorted(spans):
        out.append(text[last:start])
        out.append(" ")
        last = max(last, end)
    out.append(text[last:])
    return "".join(out)


def variant_batches(texts: Sequence[str], spans: Sequence[Sequence[Span]],
                    chars_per_call: int) -> Iterator[list[tuple[int, int, str]]]:
    """The texts' variants (each text without one of its spans) as `(text index, span index, variant)`, in
    order, grouped so that one group holds at most `chars_per_call` characters (a longer variant alone). Built
    lazily: only the group being scored exists, whatever the number or length of the texts."""
    if chars_per_call < 1:
        raise ValueError(f"chars_per_call must be >= 1, got {chars_per_call}")
    group, size = [], 0
    for i, (text, own) in enumerate(zip(texts, spans)):
        for k, span in enumerate(own):
            variant = delete(text, [span])
            if group and size + len(variant) > chars_per_call:
                yield group
                group, size = [], 0
            group.append((i, k, variant))
            size += len(variant)
    if group:
        yield group


def explain_texts(score: Score, texts: Sequence[str], probs: np.ndarray, unit: str = DEFAULT_UNIT,
                  max_spans: int = MAX_SPANS,
                  chars_per_call: int | None = None) -> list[tuple[list[Span], np.ndarray]]:
    """For each text, its spans and their weights [n_spans, n_labels]: `probs` (the text's served scores)
    minus the scores of the text without the span. The variants are scored `chars_per_call` characters at a
    time (None: CHARS_PER_CALL; `variant_batches`), so memory stays bounded however many texts are explained."""
    chars_per_call = CHARS_PER_CALL if chars_per_call is None else chars_per_call
    probs = np.asarray(probs, dtype=np.float64)
    spans = [spans_of(text, unit, max_spans) for text in texts]
    weights = [np.empty((len(own), probs.shape[1]), dtype=np.float64) for own in spans]
    for group in variant_batches(texts, spans, chars_per_call):
        scored = np.asarray(score([variant for _, _, variant in group]), dtype=np.float64)
        for (i, k, _), row in zip(group, scored):
            weights[i][k] = probs[i] - row
    return list(zip(spans, weights))


def ranked(weights: np.ndarray) -> list[int]:
    """Span indices by weight, strongest push up first (ties: earlier span first)."""
    return sorted(range(len(weights)), key=lambda i: (-weights[i], i))


def evidence(text: str, spans: Sequence[Span], weights: np.ndarray, limit: int = EVIDENCE_PER_LABEL) -> list[dict]:
    """One label's evidence: the `limit` spans whose removal moves its score most (either way), listed by
    weight, strongest push up first; spans that do not move it at all are left out."""
    weights = np.asarray(weights, dtype=np.float64)
    moving = [i for i in range(len(spans)) if weights[i] != 0.0]
    strongest = sorted(moving, key=lambda i: (-abs(weights[i]), i))[:limit]
    return [{"start": spans[i][0], "end": spans[i][1], "text": text[spans[i][0]:spans[i][1]],
             "weight": float(weights[i])} for i in sorted(strongest, key=lambda i: (-weights[i], i))]
