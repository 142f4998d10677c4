"""The site adapters by name. Adding a site: write `scraper/<site>.py` (see `scraper.adapter`) and list it here."""
from __future__ import annotations

from types import ModuleType
from urllib.parse import urlsplit, urlunsplit

from scraper import smashwords, stackoverflow
from scraper.client import strip_userinfo

SITES: dict[str, ModuleType] = {smashwords.NAME: smashwords, stackoverflow.NAME: stackoverflow}


def rebase(url: str, base_url: str | None, hosts: tuple[str, ...]) -> str:
    """Point a site URL at a mirror: `https://www.smashwords.com/books/view/1` → `http://127.0.0.1:8000/books/view/1`.

    Only URLs on the site's own hosts move; cover images on a CDN or links elsewhere stay as they are.
    """
    if not base_url or not url:
        return url
    parts = urlsplit(url)
    if parts.netloc.lower() not in hosts:
        return url
    base = urlsplit(base_url.rstrip("/"))
    return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, parts.fragment))


def dedupe_key(adapter: ModuleType, url: str) -> str:
    """The canonical URL without its scheme: http and https links to one page are one row."""
    canonical = adapter.canonical_url(url)
    return canonical.split("://", 1)[-1]


def strip_row_urls(row: dict) -> int:
    """Remove `user:password@` from the row's `url` and `*_url` cells, in place; how many cells had one.

    Credentials in a listed link are somebody's secret: they are never fetched with (the client strips them
    too) and never stored."""
    stripped = 0
    for key, value in row.items():
        if isinstance(key, str) and (key == "url" or key.endswith("_url")) and isinstance(value, str):
            clean = strip_userinfo(value)
            if clean != value:
                row[key] = clean
                stripped += 1
    return stripped
