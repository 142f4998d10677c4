"""The site adapters on every real saved page in ../shared/fixtures (Smashwords 2012-2013, StackOverflow 2015-2022).

Exact titles, exact label lists, the start of each description: if a parser change breaks an old layout,
these say which page and which field.
"""
from __future__ import annotations

import pytest

from scraper import smashwords, stackoverflow
from scraper.client import DEFAULT_USER_AGENT
from scraper.robots import parse_robots

SMASHWORDS_BOOKS = {
    # file: (title, labels, text starts with, text also contains, extras)
    "books_view_109660.html": (
        "Iceland: A Stormy Motorcycle Adventure",
        ["Nonfiction » Travel » By region » Europe » Iceland"],
        "Active volcanoes, glaciers, rivers without bridges and killer sheep - Iceland offers the kind of riding",
        "Includes 8 maps and 21 color pictures.",
        {"author": "Sherrie McCarthy", "price": "3.99 USD", "words": 37500, "published": "2011-11-30",
         "cover_url": "http://cache.smashwire.com/bookCovers/8e6db3a08d77a9717ba4ea7017cc23934d8ca9ef-thumb"}),
    "books_view_120327.html": (
        "Fernweh - mit dem Motorrad um die Welt",
        ["Nonfiction » Travel » Trip Journals", "Nonfiction » Travel » Road travel"],
        "Sibirien, Karakorum, Wladiwostok, Atacama Wüste, Feuerland... Bekommen Sie eine Gänsehaut",
        "In 14 Monaten war er abertausende von Kilometern unterwegs",        # only in the long description
        {"author": "Patrick Schweizer", "price": "2.99 USD", "words": 34890, "published": "2012-01-06",
         "cover_url": "http://cache.smashwire.com/bookCovers/5a4482742df6ebb6b2e22052b4307fee7e6ad10a-thumb"}),
    "books_view_155976.html": (   # the saved file is book 142475 despite its name; the parser never needs the id
        "Buying and Riding a Motorcycle in South East Asia",
        ["Nonfiction » Travel » By region » Asia » Thailand", "Nonfiction » Transportation » Motorcycles / Pictorial"],
        'When it comes to riding Southeast Asia the big question is not "should I buy or should I rent"',
        "Mid-way through a world trip by motorcycle",                        # the "Extended description"
        {"author": "Sherrie McCarthy", "price": "2.99 USD", "words": 9809, "published": "2012-03-16",
         "cover_url": "https://dwtr67e3ikfml.cloudfront.net/bookCovers/2c0ef26c7bd3d766766f0a2f438dae991c18ada8-thumb"}),
    "books_view_52.html": (
        "Smashwords Style Guide",
        ["Nonfiction » Computers and Internet » Digital publishing", "Nonfiction » Publishing » Self-publishing"],
        "The Smashwords Style Guide has helped thousands of authors produce and publish high-quality ebooks.",
        "INSIDE THE SMASHWORDS STYLE GUIDE",
        {"author": "Mark Coker", "price": "free", "words": 27660, "published": "2008-05-05",
         "cover_url": "https://dwtr67e3ikfml.cloudfront.net/bookCovers/4a9a8c2ac2603a7e075c74d5a04b8e54b43d3598-thumb"}),
}

STACKOVERFLOW_QUESTIONS = {
    "q_TheKingInDaNorth_beautifulsoup-vs-scrapy_2021.html": (
        "Difference between BeautifulSoup and Scrapy crawler?",
        ["python", "beautifulsoup", "scrapy", "web-crawler"],
        "I want to make a website that shows the comparison between amazon and e-bay product price.",
        "I am somewhat familiar with BeautifulSoup but not so much with Scrapy crawler.",
        {"score": 141, "asked": "2013-10-30T15:43:23", "answers": 9}),
    "q_snijesh_echo-an-image-inside-html-table-using-php.html": (
        "echo an image inside html table using php",
        ["php", "arrays", "html", "html-table"],
        "I tried to generate a html table with only 2 cells using PHP. First table cell is an image",
        '     echo "<img src = treedir . \'/\' .  $tffam;?>"; //my problem here',  # code kept verbatim
        {"score": -2, "asked": "2015-02-24T05:52:00", "answers": 2}),
    "q_snijesh_how-to-convert-dictionary-terms-to-pandas-dataframe.html": (
        "How to convert dictionary terms to pandas dataframe?",
        ["python", "pandas"],
        "I used xmltodict to extract data from an XML file to dataframe\n\nimport pandas as pd\nimport xmltodict as xd",
        "gender  phenotype   sample type     subject_id  ENA-CHECKLIST",
        {"score": 1, "asked": "2020-12-17T09:20:24", "answers": 1}),
}


def read(shared_dir, site: str, name: str) -> bytes:
    path = shared_dir / "fixtures" / site / name
    if not path.exists():
        pytest.skip(f"fixture {path} not present in this copy of ../shared")
    return path.read_bytes()


def test_every_saved_page_is_covered(shared_dir):
    """A page added to ../shared/fixtures must get expectations here, not be silently ignored."""
    saved = {p.name for p in (shared_dir / "fixtures" / "smashwords").glob("*.html")}
    saved |= {p.name for p in (shared_dir / "fixtures" / "stackoverflow").glob("*.html")}
    covered = set(SMASHWORDS_BOOKS) | set(STACKOVERFLOW_QUESTIONS) | {
        "books_category_1_newest_0_anyPrice_any.html", "list_leonardosimmons_tagged-rust-votes_2015.html"}
    assert saved == covered


def assert_record(record: dict, expected: tuple, columns) -> None:
    """Exact title and labels, the description's start and a phrase inside it, site extras, column order."""
    title, labels, starts, contains, extras = expected
    assert record["title"] == title
    assert record["labels"] == labels
    assert record["text"].startswith(starts)
    assert contains in record["text"]
    for key, value in extras.items():
        assert record[key] == value, key
    assert list(record) == list(columns)


@pytest.mark.parametrize("name", sorted(SMASHWORDS_BOOKS))
def test_smashwords_book_page_gives_exact_title_categories_and_description(shared_dir, name):
    record = smashwords.parse_details(read(shared_dir, "smashwords", name), "https://www.smashwords.com/books/view/1")
    assert_record(record, SMASHWORDS_BOOKS[name], smashwords.DETAIL_COLUMNS)


def test_smashwords_text_keeps_paragraphs_and_decodes_entities(shared_dir):
    record = smashwords.parse_details(read(shared_dir, "smashwords", "books_view_52.html"), "u")
    assert "It's required reading" in record["text"]                 # &#039; decoded
    assert "Barnes & Noble" in record["text"]                         # &amp; decoded
    assert "Over 250,000 copies downloaded!\n\nUpdated December 10, 2013" in record["text"]   # <br /><br />
    assert "ebooks.This" not in record["text"] and "  " not in record["text"]


def test_smashwords_category_listing_rows_covers_and_next_page(shared_dir):
    html = read(shared_dir, "smashwords", "books_category_1_newest_0_anyPrice_any.html")
    rows, next_url = smashwords.parse_listing(html, "https://www.smashwords.com/books/category/1/newest/0/anyPrice/any")
    assert len(rows) == 19
    assert rows[0] == {"url": "https://www.smashwords.com/books/view/389592", "title": "Summer Heat",
                       "cover_url": "https://dwtr67e3ikfml.cloudfront.net/bookCovers/"
                                    "dee157252721102e63947c4f3980ebed6de0d4ce-thumb"}
    assert rows[1]["title"] == "Unofficial Olympic Guidebook - Biathlon"
    assert rows[-1]["url"] == "https://www.smashwords.com/books/view/389550"
    assert rows[-1]["title"].startswith("The Third Chair: The diary of a daughter")
    assert all(row["cover_url"].endswith("-thumb") for row in rows)
    assert len({row["url"] for row in rows}) == 19                    # "and 4 more books" links are not rows
    assert next_url == "https://www.smashwords.com/books/category/1/newest/0/anyPrice/any/20"


@pytest.mark.parametrize("name", sorted(STACKOVERFLOW_QUESTIONS))
def test_stackoverflow_question_page_gives_exact_title_tags_and_body(shared_dir, name):
    record = stackoverflow.parse_details(read(shared_dir, "stackoverflow", name), "https://stackoverflow.com/q/1")
    assert_record(record, STACKOVERFLOW_QUESTIONS[name], stackoverflow.DETAIL_COLUMNS)


def test_stackoverflow_question_text_is_the_question_not_its_answers(shared_dir):
    record = stackoverflow.parse_details(
        read(shared_dir, "stackoverflow", "q_TheKingInDaNorth_beautifulsoup-vs-scrapy_2021.html"), "u")
    assert record["text"] == ("I want to make a website that shows the comparison between amazon and e-bay product "
                              "price. Which of these will work better and why? I am somewhat familiar with "
                              "BeautifulSoup but not so much with Scrapy crawler.")


def test_stackoverflow_2015_tag_listing_rows_and_next_page(shared_dir):
    html = read(shared_dir, "stackoverflow", "list_leonardosimmons_tagged-rust-votes_2015.html")
    rows, next_url = stackoverflow.parse_listing(html, "https://stackoverflow.com/questions/tagged/rust?sort=votes")
    assert len(rows) == 50
    assert rows[0] == {"url": "https://stackoverflow.com/questions/9350125/applications-and-libraries-written-in-rust",
                       "title": "Applications and libraries written in Rust [closed]"}
    assert rows[3]["title"] == "Why are explicit lifetimes needed in Rust?"
    assert rows[-1]["title"] == "In Rust, how do I invoke a system command and capture its output?"
    assert next_url == "https://stackoverflow.com/questions/tagged/rust?page=2&sort=votes"


def test_real_stackoverflow_robots_txt_with_wildcards(shared_dir):
    """The stdlib parser ignores `*`; ours honours it, so `/questions/tagged/a+b` is off limits as intended."""
    robots = parse_robots(read(shared_dir, "stackoverflow", "robots.txt").decode())
    ok = lambda path: robots.can_fetch(DEFAULT_USER_AGENT, "https://stackoverflow.com" + path)  # noqa: E731
    assert ok("/questions/19687421/difference-between-beautifulsoup-and-scrapy-crawler")
    assert ok("/questions/tagged/rust?page=2&sort=votes")
    assert not ok("/questions/tagged/python+pandas")
    assert not ok("/questions/19687421/x?lastactivity")
    assert not ok("/search?q=rust")
    assert not ok("/posts/19687421/timeline")
    assert not ok("/users/123/name?tab=accounts")
