"""StackOverflow adapter: tag/search listings → question URLs, question pages → body text + tag labels.

Pure functions only. A question's labels are its tags, in page order.

Layers, first match wins per field (the longest text wins for `text`):
  1. JSON-LD `QAPage`/`Question`           (Google's Q&A markup, used if a page carries it)
  2. microdata in the `schema.org/Question` item (name, text, dateCreated, upvoteCount, answerCount)
  3. OpenGraph / meta (title, description excerpt)
  4. layout selectors: `_layout_question` (2021–today: `.s-prose.js-post-body`, `.post-taglist a.post-tag`),
     `_layout_legacy` (pre-2019 `.post-text` bodies, `.post-taglist a.post-tag`)
  5. generic: when no layer found tags, the `/questions/tagged/<tag>` links of the main content (not the
     sidebar), with a warning on the record
Listings: `_listing_post_summary` (today's `s-post-summary`), `_listing_question_summary` (2015–2021
`question-summary`), then the generic last layer: links to `/questions/<id>/...` in the main content, with a
warning on the listing; pagination by `rel="next"`.
"""
from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup, Tag

from scraper.adapter import (Listing, Record, in_page_chrome, absolute, combine, first_layout_rows, generic_item_rows,
                             is_http, iso_date, main_content, strip_query, to_int, unique)
from scraper.structured import (itemprop_elements, itemprop_first, json_ld_of_type, ld_text, make_soup, meta_content,
                                microdata_scope, rel_next_link)
from scraper.text import clean_inline, html_to_text

NAME = "stackoverflow"
HOSTS = ("stackoverflow.com", "www.stackoverflow.com")
DEFAULT_START_URLS = ("https://stackoverflow.com/questions/tagged/python?tab=votes",)
URL_COLUMNS = ("url", "title")
DETAIL_COLUMNS = ("url", "title", "text", "labels", "score", "asked", "answers")

_QUESTION_PATH = re.compile(r"^/questions/(\d+)(/|$)")
_TAG_PATH = re.compile(r"^/questions/tagged/([^/+\s]+)/?$")
_TITLE_SUFFIX = re.compile(r"\s+-\s+Stack Overflow$")


def canonical_url(url: str) -> str:
    """`/questions/123/slug?noredirect=1#answer-9` → `/questions/123/slug`."""
    return strip_query(url)


# ---------------------------------------------------------------- listings
def parse_listing(html: str | bytes, base_url: str) -> Listing:
    """Question rows (url, title) of one listing page, and the next page's URL or None."""
    soup = make_soup(html)
    out = first_layout_rows(soup, base_url, LISTING_LAYOUTS, canonical_url)
    warning = ""
    if not out:
        out = generic_item_rows(soup, base_url, _QUESTION_PATH, HOSTS, canonical_url)
        if out:
            warning = (f"listing layout not recognised: took {len(out)} links to /questions/<id>/ pages from the "
                       f"main content")
    next_href = rel_next_link(soup)
    if not next_href:
        link = soup.select_one(".s-pagination a.s-pagination--item[href][rel~=next], "
                               ".pager a[href] .page-numbers.next")
        if link is not None:
            next_href = str((link if link.name == "a" else link.find_parent("a"))["href"])
    next_url = absolute(next_href, base_url)
    return Listing(out, next_url if is_http(next_url) else None, warning)


def _rows_from_links(links, base_url: str) -> list[dict]:
    rows = []
    for link in links:
        href = absolute(link.get("href"), base_url)
        if _QUESTION_PATH.match(_path(href)):
            rows.append({"url": href, "title": clean_inline(link.get_text(" "))})
    return rows


def _listing_post_summary(soup: BeautifulSoup, base_url: str) -> list[dict]:
    return _rows_from_links(soup.select(".s-post-summary .s-post-summary--content-title a[href]"), base_url)


def _listing_question_summary(soup: BeautifulSoup, base_url: str) -> list[dict]:
    return _rows_from_links(soup.select(".question-summary a.question-hyperlink[href]"), base_url)


LISTING_LAYOUTS = (_listing_post_summary, _listing_question_summary)


def _path(url: str) -> str:
    return urlsplit(url).path


# ---------------------------------------------------------------- question pages
def parse_details(html: str | bytes, url: str) -> dict:
    """One question page → {"url", "title", "text", "labels", "score", "asked", "answers"}."""
    soup = make_soup(html)
    record = combine(layer(soup) for layer in DETAIL_LAYERS)
    out = Record((column, record.get(column, "")) for column in DETAIL_COLUMNS)
    out["url"] = url
    out["title"] = _TITLE_SUFFIX.sub("", out["title"])
    out["labels"] = unique(record.get("labels") or [])
    for key in ("score", "answers"):
        out[key] = to_int(str(out[key])) if out[key] not in ("", None) else ""
    out["asked"] = iso_date(out["asked"])
    if not out["labels"]:
        out["labels"] = _generic_tags(soup)
        if out["labels"]:
            out.warning = "question layout not recognised: tags taken from /questions/tagged/ links in the main content"
    return out


def _from_json_ld(soup: BeautifulSoup) -> dict:
    question = json_ld_of_type(soup, "Question")
    if not question:
        return {}
    keywords = question.get("keywords") or []
    tags = keywords if isinstance(keywords, list) else re.split(r"\s*,\s*", str(keywords))
    return {"title": ld_text(question.get("name")), "text": ld_text(question.get("text"), multiline=True),
            "labels": [clean_inline(t) for t in tags], "asked": ld_text(question.get("dateCreated")),
            "score": question.get("upvoteCount", ""), "answers": question.get("answerCount", "")}


def _from_microdata(soup: BeautifulSoup) -> dict:
    scope = microdata_scope(soup, "Question")
    if scope is None:
        return {}
    body = next(itemprop_elements(scope, "text"), None)
    return {"title": itemprop_first(scope, "name"), "text": html_to_text(body),
            "asked": itemprop_first(scope, "dateCreated"), "score": itemprop_first(scope, "upvoteCount"),
            "answers": itemprop_first(scope, "answerCount")}


def _from_meta(soup: BeautifulSoup) -> dict:
    return {"title": meta_content(soup, "og:title", "twitter:title"),
            "text": meta_content(soup, "og:description", "description")}


def _question_block(soup: BeautifulSoup) -> Tag | None:
    return soup.select_one("#question, div.question, .js-question")


def _layout_question(soup: BeautifulSoup) -> dict:
    """2021 onwards: `#question` holds `.s-prose.js-post-body`, `.post-taglist a.post-tag`, `data-score`."""
    question = _question_block(soup)
    heading = soup.select_one("#question-header h1 a.question-hyperlink, #question-header h1, h1[itemprop=name]")
    if question is None:
        return {"title": clean_inline(heading.get_text(" ")) if heading else ""}
    body = question.select_one(".s-prose.js-post-body, .js-post-body")
    votes = question.select_one(".js-vote-count[data-value]")
    answers_header = soup.select_one("#answers-header [data-answercount]")
    return {
        "title": clean_inline(heading.get_text(" ")) if heading else "",
        "text": html_to_text(body),
        "labels": [clean_inline(a.get_text()) for a in question.select(".post-taglist a.post-tag")],
        "score": question.get("data-score") or (votes.get("data-value") if votes else ""),
        "asked": (soup.select_one("#question-header ~ div time[datetime], time[itemprop=dateCreated]") or {}).get(
            "datetime", ""),
        "answers": answers_header.get("data-answercount") if answers_header else len(soup.select("div.answer")),
    }


def _layout_legacy(soup: BeautifulSoup) -> dict:
    """Before 2019: `.post-text` bodies and `.post-taglist a.post-tag`, title in `<title>`."""
    question = _question_block(soup)
    title = soup.find("title")
    scope = question or soup
    body = scope.select_one(".post-text")
    return {"title": _TITLE_SUFFIX.sub("", re.sub(r"^[\w.+#-]+ - ", "", clean_inline(title.get_text())))
            if title else "",
            "text": html_to_text(body),
            "labels": [clean_inline(a.get_text()) for a in scope.select(".post-taglist a.post-tag")]}


DETAIL_LAYERS = (_from_json_ld, _from_microdata, _from_meta, _layout_question, _layout_legacy)



def _generic_tags(soup: BeautifulSoup) -> list[str]:
    """The generic last layer for tags: `/questions/tagged/<tag>` links in the main content, outside sidebars.

    The question's own tag list comes first in the main content on every design we know; answers carry no tags.
    """
    scope = main_content(soup)
    tags = []
    for link in scope.find_all("a", href=True):
        match = _TAG_PATH.match(_path(absolute(link["href"], "https://stackoverflow.com/")))
        if match and not in_page_chrome(link, scope):
            tags.append(clean_inline(link.get_text(" ")) or unquote(match.group(1)))
    return unique(tags)
