"""Smashwords adapter: category listings → book URLs, book pages → description + category labels.

Pure functions only; `scraper.url_scraper` and `scraper.details_scraper` do the fetching.
A book's labels are its categories, each kept as the full path string ("Fiction » Fantasy » Epic"):
the prepare stage can split hierarchies, the scraper never loses them.

Layers, first match wins per field (the longest text wins for `text`, see `scraper.adapter.combine`):
  1. JSON-LD `Book` / `Product`            (schema.org markup, what current pages are expected to carry)
  2. microdata `itemprop` (category, name, image, description, price)   (2012 and 2013 pages)
  3. OpenGraph / `<meta name=Author|Description>`
  4. layout selectors: `_layout_2013` (Bootstrap page, `<h1>`, `#longDescription`),
     `_layout_2012` (`h2.bookpage_title_heading`, "Extended description"), `_layout_text_fields`
     ("Published:", "Words:", "Price:" lines any layout prints)
Listings: `_listing_2013` (`div.library-book`), then the generic last layer: links to `/books/view/<id>` in
the main content, with a warning on the listing. Book pages have no generic label layer: category links are
also the site's navigation, so an unknown design gives `no_labels` rather than made-up genres.
"""
from __future__ import annotations

import re

from bs4 import BeautifulSoup, NavigableString, Tag

from scraper.adapter import (Listing, Record, absolute, combine, first_layout_rows, generic_item_rows, is_http,
                             iso_date, strip_query, to_int, unique)
from scraper.structured import (as_list, itemprop_elements, itemprop_first, json_ld_of_type, ld_text, make_soup,
                                meta_content, microdata_scope, rel_next_link)
from scraper.text import clean_inline, html_to_text

NAME = "smashwords"
HOSTS = ("www.smashwords.com", "smashwords.com")
DEFAULT_START_URLS = ("https://www.smashwords.com/books/category/1/newest/0/any/any",)
URL_COLUMNS = ("url", "title", "cover_url")
DETAIL_COLUMNS = ("url", "title", "text", "labels", "author", "price", "words", "published", "cover_url")

_BOOK_PATH = re.compile(r"/books/view/(\d+)")
_SEPARATOR = re.compile(r"\s*(?:»|&raquo;|>|›)\s*")


def canonical_url(url: str) -> str:
    """`.../books/view/52?ref=x#reviews` → `.../books/view/52`: a book listed under many categories is one row."""
    return strip_query(url)


# ---------------------------------------------------------------- listings
def parse_listing(html: str | bytes, base_url: str) -> Listing:
    """Book rows (url, title, cover_url) of one category listing page, and the next page's URL or None."""
    soup = make_soup(html)
    rows = first_layout_rows(soup, base_url, LISTING_LAYOUTS, canonical_url)
    warning = ""
    if not rows:
        rows = generic_item_rows(soup, base_url, _BOOK_PATH, HOSTS, canonical_url,
                                 extra=lambda link: {"cover_url": _nearby_cover(link, base_url)})
        if rows:
            warning = (f"listing layout not recognised: took {len(rows)} links to /books/view/<id> pages from the "
                       f"main content")
    return Listing(rows, _next_page(soup, base_url), warning)


def _listing_2013(soup: BeautifulSoup, base_url: str) -> list[dict]:
    """`div.library-book` blocks with `a.library-title` and `img.book-list-image` (2013 design)."""
    rows = []
    for link in soup.select("a.library-title[href]"):
        book = link.find_parent(class_="library-book")
        img = book.select_one("img.book-list-image[src]") if book else None
        rows.append({"url": absolute(link["href"], base_url), "title": clean_inline(link.get_text(" ")),
                     "cover_url": absolute(img["src"], base_url) if img else ""})
    return rows


def _nearby_cover(link, base_url: str) -> str:
    """The image in the list item, article or block around a book link: its cover, in every design we know."""
    img = link.find("img", src=True)
    if img is None:
        container = link.find_parent(["li", "article", "div"])
        img = container.find("img", src=True) if container else None
    cover = absolute(img["src"], base_url) if img else ""
    return cover if is_http(cover) else ""


LISTING_LAYOUTS = (_listing_2013,)


def _next_page(soup: BeautifulSoup, base_url: str) -> str | None:
    href = rel_next_link(soup)
    if not href:
        # 2013 design: a pagination list whose forward link is a hand icon, no rel attribute.
        for link in soup.select("ul.pagination a[href]"):
            if link.select_one(".icon-hand-right, .icon-chevron-right") or clean_inline(link.get_text()).lower() in {
                    "next", "next »", "»", "›"}:
                href = str(link["href"])
    next_url = absolute(href, base_url)
    return next_url if is_http(next_url) else None


# ---------------------------------------------------------------- book pages
def parse_details(html: str | bytes, url: str) -> dict:
    """One book page → {"url", "title", "text", "labels", "author", "price", "words", "published", "cover_url"}."""
    soup = make_soup(html)
    record = combine(layer(soup) for layer in DETAIL_LAYERS)
    out = Record((column, record.get(column, "")) for column in DETAIL_COLUMNS)
    out["url"] = url
    out["labels"] = unique(record.get("labels") or [])
    out["cover_url"] = absolute(out["cover_url"], url)
    if out["words"] not in ("", None):
        out["words"] = to_int(str(out["words"]))
    out["published"] = iso_date(out["published"])
    return out


def category_path(el: Tag) -> str:
    """`<a>Fiction</a> » <a>Fantasy</a>` → 'Fiction » Fantasy' (one label, hierarchy kept)."""
    parts = [clean_inline(a.get_text(" ")) for a in el.find_all("a")]
    if not parts:
        parts = _SEPARATOR.split(clean_inline(el.get_text(" ")))
    return " » ".join(p for p in parts if p)


def _from_json_ld(soup: BeautifulSoup) -> dict:
    book = json_ld_of_type(soup, "Book", "Product")
    if not book:
        return {}
    offers = as_list(book.get("offers"))
    offer = offers[0] if offers and isinstance(offers[0], dict) else {}
    genres = [clean_inline(_SEPARATOR.sub(" » ", ld_text(g))) for g in as_list(book.get("genre"))]
    return {
        "title": ld_text(book.get("name")),
        "text": ld_text(book.get("description"), multiline=True),
        "labels": genres,
        "author": ld_text(book.get("author")),
        "price": _price_from(offer.get("price"), offer.get("priceCurrency")),
        "words": book.get("wordCount") or "",
        "published": ld_text(book.get("datePublished")),
        "cover_url": ld_text(as_list(book.get("image"))[0]) if book.get("image") else "",
    }


def _from_microdata(soup: BeautifulSoup) -> dict:
    scope = microdata_scope(soup, "Book", "Product") or soup
    return {
        "title": itemprop_first(scope, "name"),
        "text": html_to_text(next(itemprop_elements(scope, "description"), None)),
        "labels": [category_path(el) for el in itemprop_elements(scope, "category")]
                  + [category_path(el) for el in itemprop_elements(scope, "genre")],
        "author": itemprop_first(scope, "author"),
        "price": _price_from(itemprop_first(soup, "price"), itemprop_first(soup, "currency")
                             or itemprop_first(soup, "priceCurrency")),
        "cover_url": itemprop_first(scope, "image"),
        "published": itemprop_first(scope, "datePublished"),
    }


def _from_meta(soup: BeautifulSoup) -> dict:
    return {
        "title": meta_content(soup, "og:title"),
        "text": meta_content(soup, "og:description", "description"),
        "author": meta_content(soup, "author", "book:author"),
        "cover_url": meta_content(soup, "og:image"),
    }


def _layout_2013(soup: BeautifulSoup) -> dict:
    """Bootstrap design (late 2013): `<h1>` title, `div.well` blurb, hidden `div#longDescription`."""
    heading = soup.select_one("div.col-sm-8 > h1") or soup.find("h1")
    if heading is None:
        return {}
    long_description = soup.select_one("#longDescription")
    short = heading.find_next("div", class_="well")
    if short is not None:
        for more in short.select("#showLongDescription"):
            more.decompose()
    byline = heading.find_next("a", href=re.compile(r"/profile/view/"))
    price = soup.select_one("h3.panel-title")
    return {
        "title": clean_inline(heading.get_text(" ")),
        "text": html_to_text(long_description if long_description is not None else short),
        "labels": [category_path(el) for el in soup.select("div.category")],
        "author": clean_inline(byline.get_text(" ")) if byline else "",
        "price": _price_text(price.get_text(" ")) if price else "",
        "cover_url": (soup.select_one("img.cover-thumbnail[src]") or {}).get("src", ""),
    }


def _layout_2012(soup: BeautifulSoup) -> dict:
    """Product-microdata design (2012): `h2.bookpage_title_heading`, short + "Extended description" blocks."""
    heading = soup.select_one("h2.bookpage_title_heading")
    if heading is None:
        return {}
    short = soup.select_one("[itemprop=description]")
    extended = _section_after_heading(soup, "Extended description")
    text = "\n\n".join(t for t in (html_to_text(short), extended) if t)
    return {
        "title": clean_inline(heading.get_text(" ")),
        "text": text,
        "labels": [category_path(el) for el in soup.select("span.category")],
        "author": _byline(heading.parent) if heading.parent else "",
        "cover_url": (soup.select_one("div.bookInfo_coverthumb_wrap_div img[src]") or {}).get("src", ""),
    }


def _layout_text_fields(soup: BeautifulSoup) -> dict:
    """'Published: Nov. 30, 2011', 'Words: 37,500', 'Price: $3.99 USD' lines, wherever a design prints them."""
    def field(label: str) -> str:
        node = soup.find(string=re.compile(rf"^\s*{label}:\s*\S"))
        return re.sub(rf"^\s*{label}:\s*", "", str(node)).strip() if node else ""
    published = re.split(r"\s+by\b", field("Published"))[0]
    return {"published": published, "words": field("Words"), "price": _price_text("Price: " + field("Price"))}


DETAIL_LAYERS = (_from_json_ld, _from_microdata, _from_meta, _layout_2013, _layout_2012, _layout_text_fields)


def _section_after_heading(soup: BeautifulSoup, heading_text: str) -> str:
    """Text between the `<h2>` that reads `heading_text` and the next `<h2>` (the 2012 design has no wrapper)."""
    heading = next((h for h in soup.find_all("h2") if clean_inline(h.get_text(" ")) == heading_text), None)
    if heading is None:
        return ""
    parts = []
    for sibling in heading.next_siblings:
        if isinstance(sibling, Tag) and sibling.name == "h2":
            break
        parts.append(str(sibling) if isinstance(sibling, (Tag, NavigableString)) else "")
    return html_to_text("".join(parts))


def _byline(container: Tag) -> str:
    """The profile link right after a bare 'By' (not 'Also by', not 'Published by')."""
    for link in container.find_all("a", href=re.compile(r"/profile/view/")):
        before = link.previous_sibling
        if isinstance(before, NavigableString) and re.search(r"(^|\n)\s*By\s*$", str(before)):
            return clean_inline(link.get_text(" "))
    return ""


def _price_text(text: str) -> str:
    """'Price: $3.99 USD' → '3.99 USD', 'Price: Free!' → 'free'."""
    text = clean_inline(text)
    if re.search(r"Price:\s*Free", text, re.I):
        return "free"
    match = re.search(r"Price:\s*\$?\s*(\d[\d.,]*)\s*([A-Z]{3})?", text)
    if not match:
        return ""
    return f"{match.group(1)} {match.group(2) or 'USD'}"


def _price_from(amount, currency) -> str:
    if amount in (None, ""):
        return ""
    amount = str(amount).strip()
    if re.fullmatch(r"0+(\.0+)?", amount):
        return "free"
    return f"{amount} {currency or 'USD'}".strip()

