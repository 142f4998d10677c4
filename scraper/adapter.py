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


class Listing(tuple):
    """What `parse_listing` returns: unpacks as `(rows, next_url)`; `warning` is set when no known layout matched
    and the rows come from the generic last layer (worth a look, and worth a new layout function)."""

    def __new__(cls, rows: list[dict], next_url: str | None, warning: str = "") -> "Listing":
        listing = super().__new__(cls, (rows, next_url))
        listing.warning = warning
        return listing


class Record(dict):
    """What `parse_details` returns: the record's fields; `warning` is set when a generic last layer filled one."""
    warning: str = ""


def first_layout_rows(soup, base_url: str, layouts, canonical) -> list[dict]:
    """Rows from the first listing layout that finds any, one per canonical URL (a book listed twice on a
    page, or a question in two widgets, is one row). Links that are not http(s) (`javascript:`, `mailto:`,
    `data:`) are never rows."""
    rows: list[dict] = []
    for layout in layouts:
        rows = [row for row in layout(soup, base_url) if is_http(row["url"])]
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


# Page furniture, not content: links in these are never items (related questions, navigation, footers).
_CHROME_TAGS = frozenset({"aside", "nav", "header", "footer"})
_CHROME_ROLES = frozenset({"complementary", "navigation", "banner", "contentinfo"})
_CHROME_IDS = re.compile(r"(^|[-_\s])(sidebar|sidenav|navbar|topbar|footer)($|[-_\s])", re.I)


def main_content(soup):
    """The page's main content: `[role=main]`, `<main>`, `#mainbar`, `#content`, else the body."""
    for selector in ("[role=main]", "main", "#mainbar", "#content"):
        found = soup.select_one(selector)
        if found is not None:
            return found
    return soup.body or soup


def in_page_chrome(el, scope) -> bool:
    """Whether `el` sits in navigation, a sidebar, a header or a footer below `scope` (walked upwards, no recursion)."""
    node = el.parent
    while node is not None and node is not scope:
        if node.name in _CHROME_TAGS or node.get("role") in _CHROME_ROLES or _CHROME_IDS.search(
                " ".join([str(node.get("id", ""))] + list(node.get("class") or []))):
            return True
        node = node.parent
    return False


def generic_item_rows(soup, base_url: str, item_path: re.Pattern, hosts, canonical, extra=None) -> list[dict]:
    """The generic last listing layer: links in the main content whose path matches the site's item-URL pattern,
    on the page's own host or one of the site's `hosts`, one row per canonical URL (the first link text that is
    not empty is the title). `extra(link)` adds site columns (a cover image)."""
    page_host = (urlsplit(base_url).hostname or "").lower()
    scope = main_content(soup)
    rows: dict[str, dict] = {}
    for link in scope.find_all("a", href=True):
        url = absolute(link["href"], base_url)
        if not is_http(url):
            continue
        parts = urlsplit(url)
        if (parts.hostname or "").lower() not in {page_host, *hosts} or not item_path.match(parts.path):
            continue
        if in_page_chrome(link, scope):
            continue
        key = canonical(url)
        title = re.sub(r"\s+", " ", link.get_text(" ")).strip()
        row = rows.get(key)
        if row is None:
            rows[key] = {"url": url, "title": title, **(extra(link) if extra else {})}
        elif not row["title"] and title:
            row["title"] = title
    return list(rows.values())


def is_http(url: str | None) -> bool:
    """An absolute http(s) URL with a host: the only kind of link a listing can yield."""
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def absolute(url: str | None, base: str) -> str:
    """`url` resolved against `base`; "" for an empty or unreadable href (`http://[broken`)."""
    if not url or not url.strip():
        return ""
    try:
        return urljoin(base, url.strip())
    except ValueError:
        return ""


def strip_query(url: str) -> str:
    """Lower-case host, no query, no fragment, no trailing slash: one key per page (an unreadable URL is its own
    key: it ends as a bad_url error row, not as a crash)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
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
