"""Layouts nobody wrote a selector for: the generic last layer of each listing parser (and of the StackOverflow
question parser) finds the items in the main content, ignores page furniture and non-HTTP links, and says that
the layout was not recognised. Run as users run them: `python -m scraper.url_scraper` against the local site."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scraper import details_scraper, smashwords, stackoverflow, url_scraper
from tests.scraper_site.site import LocalSite

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--delay", "0", "--timeout", "2", "--retries", "0", "--no-progress"]


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def old_search_page(n: int = 50) -> str:
    """A StackOverflow search results page of the older design, written for this test: each question under
    `.question-summary .result-link a` (a selector no layout knows), with the noise real pages carry."""
    summaries = "".join(
        f'<div class="question-summary search-result" id="question-summary-{7000 + i}">'
        f'<div class="statscontainer"><div class="votes"><span class="vote-count-post"><strong>{i}</strong></span>'
        f'</div></div><div class="summary"><div class="result-link"><span><a href="/questions/{7000 + i}/how-to-'
        f'thing-{i}?r=SearchResults" title="How to thing {i}?">Q: How to thing {i}?</a></span></div>'
        f'<div class="excerpt">Excerpt {i} ... <a href="/questions/{7000 + i}/how-to-thing-{i}#answer-{i}">'
        f'answer</a></div><div class="tags t-python"><a href="/questions/tagged/python" class="post-tag">python</a>'
        f'</div><div class="started"><a href="/users/{i}/someone">someone</a></div></div></div>'
        for i in range(n))
    return f"""<!DOCTYPE html><html><head><title>Posts containing 'thing' - Stack Overflow</title></head><body>
<div class="topbar"><a href="/questions/1/hot-question-in-the-top-bar">Hot</a> <a href="/questions/ask">Ask</a></div>
<header><nav><a href="/questions/2/nav-link">Nav</a></nav></header>
<div id="content"><div id="mainbar">
  <h1>Search Results</h1>
  <a href="javascript:void(0)" class="js-show-more">show more</a> <a href="mailto:team@stackoverflow.com">mail</a>
  <a href="https://evil.example/questions/3/phishing">A look-alike on another host</a>
  <div class="search-results js-search-results">{summaries}</div>
  <div class="pager"><a href="javascript:loadPage(2)" rel="next">next</a></div>
</div>
<div id="sidebar"><div class="module"><a href="/questions/4/related-in-the-sidebar">Related</a></div></div>
</div><footer><a href="/questions/5/in-the-footer">Footer</a></footer></body></html>"""


def test_an_old_stackoverflow_search_page_gives_its_50_questions_with_a_warning(tmp_path):
    site = LocalSite.build()
    site.add("/search", old_search_page())
    with site:
        out = tmp_path / "so_urls.csv"
        result = subprocess.run([sys.executable, "-m", "scraper.url_scraper", "--site", "stackoverflow",
                                 "--start-url", site.url("/search?q=thing"), "--out", str(out), *FAST],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        root = site.root
    assert result.returncode == 0, result.stderr
    rows = read_csv(out)
    assert [r["url"] for r in rows] == [f"{root}/questions/{7000 + i}/how-to-thing-{i}?r=SearchResults"
                                        for i in range(50)]
    assert [r["title"] for r in rows] == [f"Q: How to thing {i}?" for i in range(50)]
    assert "listing layout not recognised: took 50 links to /questions/<id>/ pages" in result.stderr
    assert "50 rows written" in result.stdout and "warnings (generic_layout 1)" in result.stdout
    assert read_csv(out.with_name("so_urls.pages.csv"))[0]["next_url"] == ""     # javascript: is no next page


def test_an_unknown_smashwords_listing_design_gives_its_books_and_covers(tmp_path, capsys):
    site = LocalSite.build()
    books = "".join(f'<article class="book-card"><a href="/books/view/{500 + i}"><img src="/img/{500 + i}.jpg"></a>'
                    f'<h3><a href="/books/view/{500 + i}?ref=card">Card title {i}</a></h3></article>'
                    for i in range(6))
    site.add("/books/category/9", f"""<html><body><nav><a href="/books/view/1">Staff pick in the menu</a></nav>
        <main><h1>New releases</h1>{books}<a href="javascript:void(0)" class="library-title">x</a></main>
        <aside><a href="/books/view/2">Also bought</a></aside></body></html>""")
    with site:
        out = tmp_path / "sw_urls.csv"
        assert url_scraper.run(["--site", "smashwords", "--start-url", site.url("/books/category/9"),
                                "--out", str(out), *FAST]) == 0
        root = site.root
    assert [(r["url"], r["title"], r["cover_url"]) for r in read_csv(out)] == [
        (f"{root}/books/view/{500 + i}", f"Card title {i}", f"{root}/img/{500 + i}.jpg") for i in range(6)]
    assert "listing layout not recognised" in capsys.readouterr().err


@pytest.mark.parametrize("href", ["javascript:void(0)", "mailto:a@b.c", "data:text/html,x", "ftp://h/books/view/1",
                                  "http://[broken/books/view/1", "tel:+100"])
def test_non_http_links_are_never_listing_rows(href):
    page = (f'<div class="library-book"><a class="library-title" href="{href}">Bad</a></div>'
            f'<div class="library-book"><a class="library-title" href="/books/view/7">Good</a></div>')
    rows, next_url = smashwords.parse_listing(page, "https://www.smashwords.com/books/category/1")
    assert [r["url"] for r in rows] == ["https://www.smashwords.com/books/view/7"]
    rows, next_url = stackoverflow.parse_listing(f'<link rel="next" href="{href}"><main></main>',
                                                 "https://stackoverflow.com/questions")
    assert (rows, next_url) == ([], None)


def test_a_question_page_of_an_unknown_design_gets_its_tags_from_the_main_content_with_a_warning(tmp_path, capsys):
    site = LocalSite.build()
    page = """<html><head><title>Lifetimes in a struct - Stack Overflow</title></head><body>
      <nav><a href="/questions/tagged/javascript">javascript</a></nav>
      <main><h1>Lifetimes in a struct</h1>
        <article itemscope itemtype="https://schema.org/Question"><h2 itemprop="name">Lifetimes in a struct</h2>
          <div itemprop="text"><p>Why does the borrow checker reject this?</p></div>
          <ul class="tag-chips"><li><a href="/questions/tagged/rust" class="chip">rust</a></li>
            <li><a href="https://stackoverflow.com/questions/tagged/lifetimes" class="chip">lifetimes</a></li>
            <li><a href="/questions/tagged/rust+lifetimes">both</a></li></ul></article></main>
      <aside id="right-sidebar"><a href="/questions/tagged/unrelated">unrelated</a></aside></body></html>"""
    site.add("/questions/77/lifetimes", page)
    with site:
        urls = tmp_path / "urls.txt"
        urls.write_text(site.url("/questions/77/lifetimes") + "\n")
        out = tmp_path / "so.csv"
        assert details_scraper.run(["--site", "stackoverflow", "--urls", str(urls), "--out", str(out), *FAST]) == 0
    [row] = read_csv(out)
    assert (row["title"], row["text"], json.loads(row["labels"])) == (
        "Lifetimes in a struct", "Why does the borrow checker reject this?", ["rust", "lifetimes"])
    captured = capsys.readouterr()
    assert "question layout not recognised" in captured.err and "warnings (generic_layout 1)" in captured.out


def test_known_layouts_give_no_warning():
    with LocalSite.build() as site:
        listing = stackoverflow.parse_listing(site.routes["/questions/tagged/python"].body, site.root)
        record = stackoverflow.parse_details(site.routes[site.questions[0].path].body, site.root)
    assert len(listing[0]) == 3 and listing.warning == "" and record.warning == ""
