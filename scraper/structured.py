"""Readers for the structured metadata pages publish for machines: JSON-LD, microdata and OpenGraph/meta.

Site adapters try these first because they change far less often than a site's CSS classes; the
layout-specific selectors in each adapter only fill what the structured layers left empty.
All functions are pure: a parsed `BeautifulSoup` in, plain Python values out.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

from bs4 import BeautifulSoup, Tag

from scraper.text import clean_inline, html_to_text, normalise_text, parse_html


def make_soup(html: str | bytes) -> BeautifulSoup:
    """Parse with lxml (fast, forgiving with truncated pages); bytes let bs4 honour the page's own charset."""
    return parse_html(html)


# ---------------------------------------------------------------- JSON-LD
def json_ld_objects(soup: BeautifulSoup) -> list[dict]:
    """Every JSON object in the page's `application/ld+json` scripts, `@graph` lists flattened.

    A malformed block is skipped rather than failing the page: the layout layers still get their turn.
    """
    found: list[dict] = []
    for script in soup.find_all("script", attrs={"type": lambda t: t and "ld+json" in t.lower()}):
        raw = script.string or script.get_text() or ""
        try:
            data = json.loads(raw.strip())
        except (ValueError, RecursionError):        # RecursionError: a block nested thousands of levels deep
            continue
        stack: list[Any] = [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                found.append(item)
                if isinstance(item.get("@graph"), list):
                    stack.extend(item["@graph"])
                if isinstance(item.get("mainEntity"), (dict, list)):
                    stack.append(item["mainEntity"])
    return found


def json_ld_of_type(soup: BeautifulSoup, *types: str) -> dict | None:
    """The first JSON-LD object whose `@type` is one of `types` (case-insensitive)."""
    wanted = {t.lower() for t in types}
    for obj in json_ld_objects(soup):
        kind = obj.get("@type")
        kinds = kind if isinstance(kind, list) else [kind]
        if any(isinstance(k, str) and k.lower() in wanted for k in kinds):
            return obj
    return None


def as_list(value: Any) -> list:
    """JSON-LD allows a single value or a list for any property."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def ld_text(value: Any, multiline: bool = False) -> str:
    """A JSON-LD property as one clean string (names of nested objects, HTML in text fields flattened).

    `multiline` keeps the paragraph breaks of a description; titles and names become one line.
    """
    if isinstance(value, dict):
        value = value.get("name") or value.get("text") or value.get("@value") or ""
    if isinstance(value, list):
        return ", ".join(filter(None, (ld_text(v, multiline) for v in value)))
    if value is None:
        return ""
    text = str(value)
    if "<" in text and ">" in text:
        return html_to_text(text) if multiline else clean_inline(html_to_text(text))
    return normalise_text(_INLINE_SPACE.sub(" ", text)) if multiline else clean_inline(text)


_INLINE_SPACE = re.compile(r"[ \t\u00a0]+")


# ---------------------------------------------------------------- microdata
def microdata_scope(soup: BeautifulSoup, *type_suffixes: str) -> Tag | None:
    """The first element with `itemscope` whose `itemtype` ends with one of the suffixes ("Book", "Question")."""
    for el in soup.find_all(attrs={"itemtype": True}):
        itemtype = str(el.get("itemtype", "")).rstrip("/")
        if any(itemtype.lower().endswith("/" + s.lower()) for s in type_suffixes):
            return el
    return None


def _owned_by(el: Tag, scope: Tag) -> bool:
    """True when `el` belongs to `scope` itself and not to an item nested inside it."""
    parent = el.parent
    while parent is not None and parent is not scope:
        if parent.has_attr("itemscope"):
            return False
        parent = parent.parent
    return parent is scope


def itemprop_elements(scope: Tag, name: str) -> Iterator[Tag]:
    """Elements carrying `itemprop=name` that belong to `scope` (not to nested items)."""
    for el in scope.find_all(attrs={"itemprop": True}):
        props = str(el.get("itemprop", "")).split()
        if name in props and (scope.name == "[document]" or _owned_by(el, scope)):
            yield el


_VALUE_ATTRIBUTE = {"img": "src", "a": "href", "link": "href", "time": "datetime", "source": "src", "data": "value"}


def itemprop_value(el: Tag) -> str:
    """The microdata value of one element: `content`, then the URL/time attribute, then its text."""
    if el.has_attr("content"):
        return clean_inline(str(el["content"]))
    attr = _VALUE_ATTRIBUTE.get(el.name)
    if attr and el.has_attr(attr):
        return clean_inline(str(el[attr]))
    if el.has_attr("data-value"):
        return clean_inline(str(el["data-value"]))
    return clean_inline(el.get_text(" "))


def itemprop_first(scope: Tag | None, name: str) -> str:
    if scope is None:
        return ""
    for el in itemprop_elements(scope, name):
        value = itemprop_value(el)
        if value:
            return value
    return ""


# ---------------------------------------------------------------- OpenGraph / meta
def meta_content(soup: BeautifulSoup, *keys: str) -> str:
    """The first non-empty `<meta property|name=key content=...>` among `keys` (case-insensitive names)."""
    wanted = [k.lower() for k in keys]
    metas = soup.find_all("meta", attrs={"content": True})
    for key in wanted:
        for meta in metas:
            names = {str(meta.get("property", "")).lower(), str(meta.get("name", "")).lower()}
            if key in names:
                value = clean_inline(str(meta["content"]))
                if value:
                    return value
    return ""


def canonical_link(soup: BeautifulSoup) -> str:
    link = soup.find("link", rel=lambda r: r and "canonical" in (r if isinstance(r, list) else [r]))
    return str(link["href"]).strip() if link and link.has_attr("href") else meta_content(soup, "og:url")


def rel_next_link(soup: BeautifulSoup) -> str:
    """`<link rel=next>` or `<a rel=next>`: the standard way a listing names its next page."""
    for tag in ("link", "a"):
        el = soup.find(tag, rel=lambda r: r and "next" in (r if isinstance(r, list) else str(r).split()),
                       href=True)
        if el:
            return str(el["href"]).strip()
    return ""
