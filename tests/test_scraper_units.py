"""Pure pieces of the scraper: HTML → text, structured metadata, CSV resume/repair, URL handling, Retry-After."""
from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from scraper import smashwords, stackoverflow
from scraper.adapter import combine, iso_date, to_int
from scraper.client import DEFAULT_USER_AGENT, parse_retry_after
from scraper.robots import parse_robots
from scraper.sites import dedupe_key, rebase
from scraper.storage import CsvAppender, errors_path, repair_and_read
from scraper.text import html_to_text

COLUMNS = ["url", "title", "text", "labels"]


# ---------------------------------------------------------------- text
def test_blocks_are_separated_not_glued():
    assert html_to_text("<p>First sentence.</p><p>Second sentence.</p>") == "First sentence.\n\nSecond sentence."
    assert html_to_text("<div>one</div><div>two</div>") == "one\ntwo"
    assert html_to_text("<li>a</li><li>b</li>") == "a\nb"


def test_br_pairs_make_paragraphs_and_entities_are_decoded():
    assert html_to_text("Tom &amp; Jerry&#039;s &ldquo;show&rdquo;<br><br>Next&nbsp;part") == \
        "Tom & Jerry's \u201cshow\u201d\n\nNext part"


def test_whitespace_is_normalised_and_scripts_dropped():
    assert html_to_text("<p>  many \n\t spaces   here </p><script>var x = 1;</script><style>p{}</style>") == \
        "many spaces here"


def test_code_blocks_keep_their_indentation():
    text = html_to_text("<p>Try:</p><pre><code>for x in y:\n    print(x)\n</code></pre><p>Then <code>run()</code>.</p>")
    assert text == "Try:\n\nfor x in y:\n    print(x)\n\nThen run()."


def test_inline_tags_do_not_add_or_remove_spaces():
    assert html_to_text("<p>I am <strong>somewhat</strong> familiar with <em>it</em>.</p>") == \
        "I am somewhat familiar with it."


# ---------------------------------------------------------------- layering
def test_combine_first_layer_wins_but_longest_text_wins():
    record = combine([{"title": "From JSON-LD", "text": "short"}, {"title": "From layout", "text": "short, but longer",
                                                                   "labels": ["a"]}])
    assert record == {"title": "From JSON-LD", "text": "short, but longer", "labels": ["a"]}


def test_stackoverflow_json_ld_question_layer():
    ld = {"@context": "https://schema.org", "@type": "QAPage",
          "mainEntity": {"@type": "Question", "name": "Why is &lt;b&gt; bold?", "text": "<p>It just <b>is</b>.</p>",
                         "keywords": "html, css", "dateCreated": "2024-01-02T03:04:05Z", "upvoteCount": 7,
                         "answerCount": 2}}
    page = f'<html><head><script type="application/ld+json">{json.dumps(ld)}</script></head><body></body></html>'
    record = stackoverflow.parse_details(page, "https://stackoverflow.com/questions/1/x")
    assert record["labels"] == ["html", "css"]
    assert record["text"] == "It just is."
    assert (record["score"], record["answers"], record["asked"]) == (7, 2, "2024-01-02T03:04:05")


def test_broken_json_ld_falls_through_to_the_layout():
    page = ('<script type="application/ld+json">{not json</script><h1>Layout title</h1>'
            '<div class="well">Blurb.</div><div class="category"><a>Fiction</a> &raquo; <a>Horror</a></div>')
    record = smashwords.parse_details(page, "https://www.smashwords.com/books/view/9")
    assert (record["title"], record["text"], record["labels"]) == ("Layout title", "Blurb.", ["Fiction » Horror"])


def test_garbage_parses_to_an_empty_record_not_an_exception():
    record = smashwords.parse_details(b"\x00\xff\xfe garbage <<<>>> \x89PNG", "u")
    assert (record["title"], record["text"], record["labels"]) == ("", "", [])
    assert stackoverflow.parse_listing("<html><p>nothing</p>", "https://stackoverflow.com/") == ([], None)


def test_number_and_date_helpers():
    assert (to_int("37,500"), to_int("9809 (approximate)"), to_int("-2"), to_int("n/a")) == (37500, 9809, -2, None)
    assert iso_date("Nov. 30, 2011") == "2011-11-30"
    assert iso_date("March 16, 2012") == "2012-03-16"
    assert iso_date("sometime in spring") == "sometime in spring"


# ---------------------------------------------------------------- URLs
def test_dedupe_key_ignores_scheme_query_and_fragment():
    a = dedupe_key(smashwords, "http://www.smashwords.com/books/view/52")
    b = dedupe_key(smashwords, "https://WWW.smashwords.com/books/view/52/?ref=cat#reviews")
    assert a == b
    assert dedupe_key(stackoverflow, "https://stackoverflow.com/questions/1/x?noredirect=1") == \
        dedupe_key(stackoverflow, "https://stackoverflow.com/questions/1/x")


def test_rebase_moves_only_the_sites_own_hosts():
    assert rebase("https://www.smashwords.com/books/view/1?x=1", "http://127.0.0.1:9000", smashwords.HOSTS) == \
        "http://127.0.0.1:9000/books/view/1?x=1"
    assert rebase("https://cdn.example.net/cover.jpg", "http://127.0.0.1:9000", smashwords.HOSTS) == \
        "https://cdn.example.net/cover.jpg"


# ---------------------------------------------------------------- robots and Retry-After
def test_robots_wildcards_and_end_anchor():
    robots = parse_robots("User-agent: *\nDisallow: /*.pdf$\nDisallow: /a/*/b\nCrawl-delay: 2\n")
    assert not robots.can_fetch(DEFAULT_USER_AGENT, "http://h/x/file.pdf")
    assert robots.can_fetch(DEFAULT_USER_AGENT, "http://h/x/file.pdf.html")
    assert not robots.can_fetch(DEFAULT_USER_AGENT, "http://h/a/zzz/b/c")
    assert robots.crawl_delay(DEFAULT_USER_AGENT) == 2


def test_robots_fractional_and_garbage_crawl_delays():
    """The stdlib drops "Crawl-delay: 0.5" (we would go faster than asked); negative and garbage values are ignored."""
    assert parse_robots("User-agent: *\nCrawl-delay: 0.5\n").crawl_delay(DEFAULT_USER_AGENT) == 0.5
    assert parse_robots("User-agent: *\nCrawl-delay: 2.5 # slow down\n").crawl_delay(DEFAULT_USER_AGENT) == 2.5
    assert parse_robots("User-agent: *\nCrawl-delay: 1e9\n").crawl_delay(DEFAULT_USER_AGENT) == 1e9
    for garbage in ("-3", "soon", "nan", ""):
        assert parse_robots(f"User-agent: *\nCrawl-delay: {garbage}\nDisallow: /x\n").crawl_delay(
            DEFAULT_USER_AGENT) is None, garbage


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(formatdate(1_000_010, usegmt=True), now=1_000_000) == 10.0
    assert parse_retry_after(formatdate(999_990, usegmt=True), now=1_000_000) == 0.0    # a date in the past
    for unreadable in ("soon", "-5", "1e9", "inf", "Mon, 99 Foo 2024 99:99:99 GMT", "", None):
        assert parse_retry_after(unreadable) is None, unreadable


# ---------------------------------------------------------------- CSV output
def write_rows(path, n):
    with CsvAppender(path, COLUMNS) as out:
        for i in range(n):
            out.write({"url": f"https://x/{i}", "title": f'Title, "{i}"', "text": f"line one\nline two {i}\n\nend",
                       "labels": ["Fiction » Fantasy", f"tag{i}"]})


def test_labels_are_json_lists_and_multiline_text_round_trips(tmp_path):
    path = tmp_path / "out.csv"
    write_rows(path, 2)
    rows = repair_and_read(path, COLUMNS)
    assert [json.loads(r["labels"]) for r in rows] == [["Fiction » Fantasy", "tag0"], ["Fiction » Fantasy", "tag1"]]
    assert rows[1]["text"] == "line one\nline two 1\n\nend" and rows[1]["title"] == 'Title, "1"'


def test_a_torn_last_row_is_cut_at_every_possible_byte_and_later_rows_append_cleanly(tmp_path):
    """Whatever byte `kill -9` stops the write at, resume keeps exactly the complete rows before it, and the
    rows appended after the repair read back whole."""
    path = tmp_path / "out.csv"
    write_rows(path, 3)
    full = path.read_bytes()
    ends = [i + 1 for i, byte in enumerate(full) if byte == 0x0A and full[i + 1:i + 10] in (b'"https://', b"")]
    assert len(ends) == 4                       # the header and three rows
    for cut in range(ends[0], len(full) + 1):
        path.write_bytes(full[:cut])
        rows = repair_and_read(path, COLUMNS, log=lambda message: None)
        complete = sum(1 for end in ends[1:] if end <= cut)
        assert len(rows) == complete, cut
        assert path.read_bytes() == full[:ends[complete]]
        with CsvAppender(path, COLUMNS) as out:               # the resumed run appends the next row
            out.write({"url": "https://x/next", "title": "Next", "text": "a\nb", "labels": ["L"]})
        again = repair_and_read(path, COLUMNS)
        assert [r["url"] for r in again] == [f"https://x/{i}" for i in range(complete)] + ["https://x/next"]
        assert again[-1] == {"url": "https://x/next", "title": "Next", "text": "a\nb", "labels": '["L"]'}


def test_an_output_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("id,name\n1,a\n")
    with pytest.raises(ValueError, match="expected"):
        repair_and_read(path, COLUMNS)


def test_errors_file_sits_beside_the_output(tmp_path):
    assert errors_path(tmp_path / "smashwords_details.csv").name == "smashwords_details.errors.csv"
