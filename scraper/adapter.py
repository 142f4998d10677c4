"""What a site adapter is, and the helpers every adapter shares.

An adapter is a module with pure functions and a few constants (see `scraper.smashwords`):

    NAME, HOSTS, DEFAULT_START_URLS, URL_COLUMNS, DETAIL_COLUMNS
    parse_listing(html, base_url) -> (rows, next_url)     rows: [{"url": ..., "title": ..., extras}]
    parse_details(html, url) -> dict                        {"title", "text", "labels": [...], extras}
    canonical_url(url) -> str                               the key rows are deduplicated on

`parse_details` builds one partial record per layer (structured metadata first, then one small function
per known page layout) and `combine` merges them, so supporting a new layout is one more function in
the adapter's `DETAIL_LAYOUTS` tuple.
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def combine(layers: Iterable[dict]) -> dict:
    """Merge partial records: the first layer that has a field wins, except `text`, where the longest wins.

    Meta descriptions and structured `description` fields are often shortened excerpts of the text the page
    shows in full, so for the body text the fullest candidate is the right one.
    """
    record: dict = {}
    texts: list[str] = []
    for layer in layers:
        for key, value in layer.items():
            if key == "text":
                if value:
                    texts.append(value)
            elif is_empty(record.get(key)) and not is_empty(value):
                record[key] = value
    record["text"] = max(texts, key=len) if texts else ""
    return record


def unique(items: Iterable[str]) -> list[str]:
    """Drop empties and repeats, keep first-seen order."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def first_layout_rows(soup, base_url: str, layouts, canonical) -> list[dict]:
    """Rows from the first listing layout that finds any, one per canonical URL (a book listed twice on a
    page, or a question in two widgets, is one row)."""
    rows: list[dict] = []
    for layout in layouts:
        rows = layout(soup, base_url)
        if rows:
            break
    seen: set[str] = set()
    out = []
    for row in rows:
        key = canonical(row["url"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def absolute(url: str | None, base: str) -> str:
    return urljoin(base, url.strip()) if url and url.strip() else ""


def strip_query(url: str) -> str:
    """Lower-case host, no query, no fragment, no trailing slash: one key per page."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def to_int(text: str | None) -> int | None:
    """'37,500' → 37500, '-2' → -2, '9809 (approximate)' → 9809; None when there is no number."""
    if text is None:
        return None
    match = re.search(r"-?\d[\d,]*", str(text))
    return int(match.group().replace(",", "")) if match else None


_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%b. %d, %Y", "%B %d, %Y", "%b %d, %Y",
                 "%d %B %Y", "%d %b %Y")


def iso_date(text: str | None) -> str:
    """Dates as written on the pages → ISO 8601; the original text when no known format matches."""
    if not text:
        return ""
    raw = re.sub(r"\s+", " ", text).strip().rstrip(".").replace("Z", "")
    raw = re.sub(r"^Sept\.", "Sep.", raw)
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(raw, fmt)
        except ValueError:
            continue
        return parsed.isoformat() if "H" in fmt else parsed.date().isoformat()
    return raw
