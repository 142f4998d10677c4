"""robots.txt as RFC 9309 reads it (scraper.robots): the RFC's own examples, the cases that first-match-wins got
wrong, a property test against a brute-force oracle, and the details command against the local site, whose
robots.txt disallows a page after a broader Allow (the page must never be requested, not even as a redirect hop)."""
from __future__ import annotations

import csv
import random
from functools import lru_cache
from pathlib import Path

import pytest

from scraper import details_scraper
from scraper.client import DEFAULT_USER_AGENT
from scraper.robots import ROBOTS_MAX_BYTES, decode_robots, parse_robots
from scraper.storage import errors_path
from tests.scraper_site.site import BOOKS, Fault, LocalSite

UA = DEFAULT_USER_AGENT                  # product token: multilabel-text-pipeline


def allowed(robots_txt: str, path: str, user_agent: str = UA) -> bool:
    return parse_robots(robots_txt).can_fetch(user_agent, "https://www.example.com" + path)


# ---------------------------------------------------------------- the RFC's examples
RFC_5_1 = """User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""


def test_rfc9309_section_5_examples():
    # 5.1: foobot may fetch page.html and allowed.gif and nothing else; barbot and bazbot (one group) all but
    # page.html; quxbot (an empty group) everything; everyone else the "*" group.
    cases = {("foobot", "/example/page.html"): True, ("foobot", "/example/allowed.gif"): True,
             ("foobot", "/example/other.html"): False, ("foobot", "/"): False,
             ("barbot", "/example/page.html"): False, ("BazBot/2.1 (+https://baz)", "/example/page.html"): False,
             ("bazbot", "/example/other.html"): True, ("bazbot", "/x.gif"): True,
             ("quxbot", "/example/page.html"): True, ("quxbot", "/x.gif"): True,
             (UA, "/a/b.gif"): False, (UA, "/a/b.gif?x"): True, (UA, "/example/x"): False,
             (UA, "/publications/x"): True, (UA, "/publications/x.gif"): True}   # 14 octets beat 6
    for (agent, path), expected in cases.items():
        assert allowed(RFC_5_1, path, agent) is expected, (agent, path)
    # 5.2: the longest match wins, whatever the order
    longest = "User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n"
    assert allowed(longest, "/example/page/", "foobot")
    assert not allowed(longest, "/example/page/disallowed.gif", "foobot")


def test_rfc9309_matching_rules():
    # 2.2.2: an Allow and a Disallow of the same length: Allow; the match is counted in octets of the pattern
    for rules in ("Allow: /page\nDisallow: /page\n", "Disallow: /page\nAllow: /page\n",
                  "Disallow: /p*e\nAllow: /p*e\n"):
        assert allowed("User-agent: *\n" + rules, "/page"), rules
    assert allowed("User-agent: *\nAllow: /p*\nDisallow: /pa\n", "/page")               # 3 octets each: a tie
    assert not allowed("User-agent: *\nAllow: /p*\nDisallow: /pag\n", "/page")          # 4 octets beat 3
    # 2.2.2's percent-encoding table: each path is compared in its encoded, normalised form
    for rule, url_path in (("/foo/bar?baz=quz", "/foo/bar?baz=quz"),
                           ("/foo/bar?baz=https%3A%2F%2Ffoo.bar", "/foo/bar?baz=https%3A%2F%2Ffoo.bar"),
                           ("/foo/bar/\u30c4", "/foo/bar/%E3%83%84"), ("/foo/bar/\u30c4", "/foo/bar/%e3%83%84"),
                           ("/foo/bar/%E3%83%84", "/foo/bar/%E3%83%84"), ("/foo/bar/%62%61%7A", "/foo/bar/baz"),
                           ("/foo/bar/baz", "/foo/bar/%62%61%7A")):
        assert not allowed(f"User-agent: *\nDisallow: {rule}\n", url_path), (rule, url_path)
    # 2.2.3: "$" ends the pattern, "*" is any run; %2A and %24 are the literal characters
    assert not allowed("User-agent: *\nDisallow: /this/path/exactly$\n", "/this/path/exactly")
    assert allowed("User-agent: *\nDisallow: /this/path/exactly$\n", "/this/path/exactly/not")
    assert not allowed("User-agent: *\nDisallow: /this/*/exactly\n", "/this/a/b/exactly")
    assert not allowed("User-agent: *\nDisallow: /path/file-with-a-%2A.html\n", "/path/file-with-a-*.html")
    assert allowed("User-agent: *\nDisallow: /path/file-with-a-%2A.html\n", "/path/file-with-a-b.html")
    assert not allowed("User-agent: *\nDisallow: /path/foo-%24\n", "/path/foo-$")
    assert not allowed("User-agent: *\nDisallow: / # comment in line\n", "/x")
    # 2.2.2: /robots.txt itself is always allowed
    assert allowed("User-agent: *\nDisallow: /\n", "/robots.txt")


# ---------------------------------------------------------------- what first-match-wins got wrong
def test_the_order_of_rules_does_not_matter_and_an_empty_disallow_disallows_nothing():
    assert not allowed("User-agent: *\nAllow: /books/\nDisallow: /books/view/8\n", "/books/view/8")
    assert allowed("User-agent: *\nAllow: /books/\nDisallow: /books/view/8\n", "/books/view/1")
    assert not allowed("User-agent: *\nDisallow:\nDisallow: /books/view/8\n", "/books/view/8")
    assert allowed("User-agent: *\nDisallow:\n", "/books/view/8")
    assert allowed("User-agent: *\nDisallow: /\nAllow: /books/\n", "/books/view/1")
    assert not allowed("User-agent: *\nDisallow: /\nAllow: /books/\n", "/about")
    assert not allowed(decode_robots(b"\xef\xbb\xbfUser-agent: *\nDisallow: /books/\n"), "/books/view/1")   # a BOM


def test_user_agent_groups_match_the_product_token():
    specific = "User-agent: *\nDisallow: /\n\nUser-agent: {line}\nAllow: /\n"
    # our group, case-insensitively, with a version, or as one of several user-agent lines
    for line in ("multilabel-text-pipeline", "MULTILABEL-TEXT-PIPELINE", "Multilabel-Text-Pipeline/2.0",
                 "otherbot\nUser-agent: multilabel-text-pipeline"):
        assert allowed(specific.format(line=line), "/x"), line
    # not our group: a word from our header's comment, a prefix of our token, another bot (the "*" group applies)
    for line in ("research", "scraper", "multilabel", "pipeline", "text", "multilabel-text-pipeline-two"):
        assert not allowed(specific.format(line=line), "/x"), line
    # every group naming us is merged; the "*" groups only apply when none does
    merged = ("User-agent: multilabel-text-pipeline\nDisallow: /a\nUser-agent: other\nDisallow: /\n"
              "User-agent: multilabel-text-pipeline\nDisallow: /b\nUser-agent: *\nDisallow: /c\n")
    assert [allowed(merged, p) for p in ("/a", "/b", "/c", "/d")] == [False, False, True, True]
    # blank lines and comments do not end a group; a user-agent line after a rule starts a new one
    assert not allowed("User-agent: *\n\n# note\nDisallow: /x\n", "/x")
    assert allowed("User-agent: other\nDisallow: /x\nUser-agent: *\nAllow: /\n", "/x")
    assert allowed("User-agent: other\nDisallow: /x\n", "/x")                              # no group for us


def test_crawl_delay_and_the_500_kib_limit():
    delay = lambda text: parse_robots(text).crawl_delay(UA)                             # noqa: E731
    assert delay("User-agent: *\nCrawl-delay: 0.5\n") == 0.5
    assert delay("User-agent: *\nCrawl-delay: inf\n") == float("inf")                   # the client skips the host
    for garbage in ("-3", "soon", "nan", ""):
        assert delay(f"User-agent: *\nCrawl-delay: {garbage}\nDisallow: /x\n") is None, garbage
    assert delay("User-agent: multilabel-text-pipeline\nCrawl-delay: 2\nUser-agent: *\nCrawl-delay: 9\n") == 2
    # a rule cut in half by the limit is dropped, not read shorter: "Allow: /books/" would allow every book
    head = b"User-agent: *\nDisallow: /books/\n"
    line = b"Allow: /books/view/1\n"
    padding = b"#" * (ROBOTS_MAX_BYTES - len(head) - 10) + b"\n"
    text = decode_robots(head + padding + line)
    assert "Allow" not in text and not allowed(text, "/books/view/1")
    assert allowed(decode_robots(head + line + padding), "/books/view/1")


# ---------------------------------------------------------------- property: the matcher against brute force
# Units of a path, each with the ways a rule or URL may spell it and its length in octets once encoded.
UNITS = {"a": ["a", "%61"], "b": ["b", "%62", "%62"], "/": ["/"], "?": ["?"], "=": ["="],
         "é": ["é", "%C3%A9", "%c3%a9"], "*": ["%2A", "%2a"], "$": ["%24"], "%2F": ["%2F", "%2f"], " ": ["%20"]}
LENGTH = {"a": 1, "b": 1, "/": 1, "?": 1, "=": 1, "é": 6, "*": 3, "$": 3, "%2F": 3, " ": 3}
URL_SPELLING = dict(UNITS, **{"*": ["*", "%2A"], "$": ["$", "%24"]})   # a URL may carry * and $ literally
WILD = None


def oracle_matches(pattern: tuple, anchored: bool, path: tuple) -> bool:
    """Brute force over units: WILD takes any number of path units."""
    @lru_cache(maxsize=None)
    def match(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(path) or not anchored
        if pattern[i] is WILD:
            return any(match(i + 1, k) for k in range(j, len(path) + 1))
        return j < len(path) and path[j] == pattern[i] and match(i + 1, j + 1)
    return match(0, 0)


def oracle_allowed(rules, path: tuple) -> bool:
    """The longest matching pattern decides, an Allow on a tie; no match: allowed."""
    best = None
    for allow, pattern, anchored in rules:
        if oracle_matches(pattern, anchored, path):
            key = (sum(1 if u is WILD else LENGTH[u] for u in pattern) + anchored, allow)
            best = key if best is None or key > best else best
    return True if best is None else best[1]


def spell_pattern(rng, pattern: tuple, anchored: bool) -> str:
    text = []
    for index, unit in enumerate(pattern):
        if unit is WILD:
            text.append("*")
        elif unit == "$" and (anchored or index < len(pattern) - 1) and rng.random() < 0.5:
            text.append("$")                             # a "$" that is not last is a literal dollar
        else:
            text.append(rng.choice(UNITS[unit]))
    return "".join(text) + ("$" if anchored else "")


def test_the_matcher_agrees_with_a_brute_force_oracle_on_random_rule_sets():
    rng = random.Random(9309)
    names = list(UNITS)
    checked = 0
    for case in range(2000):
        rules = []
        for _ in range(rng.randint(1, 8)):
            body = [rng.choice(names + [WILD, WILD]) for _ in range(rng.randint(0, 5))]
            rules.append((rng.random() < 0.5, tuple([rng.choice(["/", WILD])] + body), rng.random() < 0.3))
        lines = [f"{'Allow' if allow else 'Disallow'}: {spell_pattern(rng, pattern, anchored)}"
                 for allow, pattern, anchored in rules]
        lines += ["Disallow:", "# a comment", ""] * rng.randint(0, 1)
        rng.shuffle(lines)
        noise = "User-agent: otherbot\nDisallow: /\nAllow: /a\n\n" if case % 2 else ""
        text = noise + "User-agent: *\n" + "\n".join(lines) + "\n"
        robots = parse_robots(text)
        for _ in range(10):
            path = tuple(["/"] + [rng.choice(names) for _ in range(rng.randint(0, 8))])
            url = "http://h" + "".join(rng.choice(URL_SPELLING[u]) for u in path)
            assert robots.can_fetch(UA, url) is oracle_allowed(rules, path), (text, url)
            checked += 1
    assert checked == 20000


# ---------------------------------------------------------------- end to end
def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def site():
    # a BOM, "Disallow: /" under a broader "Allow: /books/", then a narrower Disallow after it, an empty one
    robots = ("\ufeffUser-agent: *\nDisallow: /\nAllow: /books/\nDisallow:\nDisallow: /books/view/8\n"
              "Allow: /go/1\n")
    with LocalSite.build(robots=robots) as running:
        yield running


def test_the_details_command_never_requests_a_page_disallowed_after_a_broader_allow(site, tmp_path):
    site.fault("/go/1", Fault(status=302, headers={"Location": "/books/view/8"}))   # allowed hop, disallowed target
    site.add("/go/2", site.routes[BOOKS[1].path].body)
    urls = [site.url(b.path) for b in BOOKS] + [site.url("/go/1"), site.url("/go/2")]
    listed = tmp_path / "urls.txt"
    listed.write_text("".join(u + "\n" for u in urls), encoding="utf-8")
    out = tmp_path / "details.csv"
    code = details_scraper.run(["--site", "smashwords", "--urls", str(listed), "--out", str(out), "--delay", "0",
                                "--timeout", "2", "--retries", "0", "--no-progress"])
    assert code == 0
    assert sorted(r["url"] for r in read_csv(out)) == sorted(site.url(b.path) for b in BOOKS[:7])
    errors = {e["url"]: e for e in read_csv(errors_path(out))}
    assert {url: e["reason"] for url, e in errors.items()} == {
        site.url("/books/view/8"): "robots_disallowed", site.url("/go/1"): "robots_disallowed",
        site.url("/go/2"): "robots_disallowed"}
    assert "Disallow: /books/view/8" in errors[site.url("/books/view/8")]["detail"]
    assert "Disallow: /" in errors[site.url("/go/2")]["detail"]
    assert site.hits("/books/view/8") == 0 and site.hits("/go/2") == 0               # never requested
    assert site.hits("/go/1") == 1 and site.hits("/robots.txt") == 1
