"""A small local copy of both sites, served by a real threaded HTTP server on 127.0.0.1, with faults on demand.

Pages are rendered from the templates in `templates/` (written for this project in the sites' current
layouts: Smashwords book pages with JSON-LD or with schema.org microdata, `div.library-book` listings;
StackOverflow `s-prose` question pages and `s-post-summary` listings with `rel="next"`).

    site = LocalSite.build(n_books=8, n_questions=6, per_page=3)
    with site:                                   # serves on http://127.0.0.1:<free port>
        site.fault("/books/view/3", Fault(status=500))         # always 500
        site.fault("/books/view/4", Fault(status=429, headers={"Retry-After": "1"}), times=1)
        ...
        site.requests                             # [(path, user_agent, monotonic time), ...]
        site.authorizations                       # [(path, Authorization header), ...]: must stay empty

Used by tests/test_scraper_*.py and bench/scrape.py. Everything here is ours; no real page is copied.
"""
from __future__ import annotations

import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from urllib.parse import parse_qs, urlsplit

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------- the catalogue
@dataclass
class Book:
    id: int
    title: str
    author: str
    paragraphs: list[str]
    categories: list[list[str]]          # each a path: ["Fiction", "Fantasy", "Epic"]
    words: int
    price: str
    published: str                       # ISO date

    @property
    def path(self) -> str:
        return f"/books/view/{self.id}"

    @property
    def labels(self) -> list[str]:
        return [" » ".join(path) for path in self.categories]

    @property
    def text(self) -> str:
        return "\n\n".join(self.paragraphs)

    @property
    def cover_path(self) -> str:
        return f"/covers/{self.id}-thumb.png"


@dataclass
class Question:
    id: int
    title: str
    paragraphs: list[str]
    code: str
    tags: list[str]
    score: int
    answers: int
    asked: str                           # ISO datetime

    @property
    def path(self) -> str:
        return f"/questions/{self.id}/{slugify(self.title)}"

    @property
    def text(self) -> str:
        return "\n\n".join([self.paragraphs[0], self.code, *self.paragraphs[1:]])


BOOKS = [
    Book(1, "The Lighthouse Keeper's Ledger", "Mara Quill",
         ["When the lamp at Skerry Point goes dark for the first time in ninety years, Ada Penhallow finds a ledger "
          "that records ships which never sailed.",
          "A quiet mystery about tides, debts & the people who keep count."],
         [["Fiction", "Mystery & detective", "Cozy"], ["Fiction", "Literature", "Literary"]],
         74210, "3.99", "2021-03-14"),
    Book(2, "Ash Crown", "Tobiah Renn",
         ["Seven heirs, one crown forged from the ashes of a dragon, and a war that nobody remembers starting.",
          "Book one of the Cinder Thrones saga."],
         [["Fiction", "Fantasy", "Epic"]], 131000, "4.99", "2020-11-02"),
    Book(3, "Sourdough for Skeptics", "Priya Halden",
         ["A practical, science-first guide to wild yeast bread: starters, hydration, and why your loaf "
          "collapsed.",
          "Includes twenty tested recipes."],
         [["Nonfiction", "Cooking", "Methods", "Baking"]], 38950, "2.99", "2022-06-30"),
    Book(4, "Orbital Debris", "K. S. Aldana",
         ["Salvage pilot Juno Reyes has three days to clear a collision cascade before it takes out the last "
          "working station in high orbit.",
          "Hard science fiction with a ticking clock."],
         [["Fiction", "Science fiction", "Hard sci-fi"], ["Fiction", "Science fiction", "Space opera"]],
         88400, "0.99", "2019-08-21"),
    Book(5, "Small Rooms, Big Quiet", "Lena Ostrowski",
         ["Essays on living alone in a city that never stops talking: on radiators, neighbours, and the ethics "
          "of borrowed sugar."],
         [["Nonfiction", "Essay", "Personal memoir"]], 41200, "1.99", "2023-01-09"),
    Book(6, "The Cartographer's Daughter", "Tobiah Renn",
         ["Isla inherits a map that redraws itself each night, and the coastline it shows is moving closer.",
          "A standalone fantasy adventure."],
         [["Fiction", "Fantasy", "General"], ["Fiction", "Adventure", "General"]], 97300, "3.49", "2021-10-30"),
    Book(7, "Bookkeeping for Makers", "Harriet Lowe",
         ["Plain-language accounting for people who sell what they make: pricing, receipts, and taxes "
          "without the jargon."],
         [["Nonfiction", "Business & economics", "Small business"]], 29870, "5.99", "2022-02-17"),
    Book(8, "Night Ferry to Tallinn", "Anders Vik",
         ["A translator boards the last ferry of the season with a manuscript that three governments want "
          "destroyed.",
          "A Baltic thriller."],
         [["Fiction", "Thriller & suspense", "Espionage"]], 80100, "4.49", "2018-12-05"),
]

QUESTIONS = [
    Question(1001, "How do I merge two dicts in a single expression?",
             ["I have two dictionaries and want a new one with the keys of both, without changing either input.",
              "Is there a one-liner that works on Python 3.8?"],
             "a = {'x': 1}\nb = {'y': 2}\nmerged = ???", ["python", "dictionary", "merge"], 42, 3,
             "2021-05-03T10:22:41"),
    Question(1002, "Why does my pandas groupby drop NaN keys?",
             ["Grouping by a column that contains missing values silently drops those rows & I lose data.",
              "How can I keep them as their own group?"],
             "df.groupby('city')['sales'].sum()\n# rows with city == NaN are gone", ["python", "pandas"], 17, 2,
             "2022-09-14T08:01:12"),
    Question(1003, "Rust borrow checker error when pushing to a Vec inside a loop",
             ["I get error E0502 (cannot borrow as mutable because it is also borrowed as immutable) when I push "
              "while iterating.",
              "What is the idiomatic fix?"],
             "for x in v.iter() {\n    v.push(*x);\n}", ["rust", "borrow-checker", "vector"], 9, 1,
             "2023-02-27T19:45:03"),
    Question(1004, "CSS grid: make the last row items stretch to fill the width",
             ["My grid has five items in rows of three; the last two should share the full width.",
              "Can grid do this without media queries?"],
             ".grid {\n  display: grid;\n  grid-template-columns: repeat(3, 1fr);\n}", ["css", "css-grid"], 5, 0,
             "2020-07-19T13:30:00"),
    Question(1005, "SQL: select the latest row per user",
             ["Each user has many login rows; I need only the newest one per user, with all its columns.",
              "Postgres 14."],
             "SELECT user_id, max(created_at) FROM logins GROUP BY user_id;", ["sql", "postgresql",
                                                                                "greatest-n-per-group"], 31, 4,
             "2022-01-05T22:10:09"),
    Question(1006, "Bash: loop over files with spaces in their names",
             ["for f in $(ls) splits my file names on spaces.",
              "What is the safe way to iterate?"],
             "for f in $(ls *.txt); do\n  wc -l \"$f\"\ndone", ["bash", "shell"], 12, 2,
             "2019-04-11T06:55:30"),
]

_SUBJECTS = ["river", "archive", "engine", "orchard", "signal", "harbour", "glacier", "circuit", "market", "garden"]
_GENRES = [["Fiction", "Fantasy", "Epic"], ["Fiction", "Romance", "Contemporary"], ["Nonfiction", "History", "Europe"],
           ["Fiction", "Mystery & detective", "Cozy"], ["Nonfiction", "Science", "Physics"]]
_TAGS = ["python", "pandas", "rust", "sql", "css", "bash", "numpy", "django"]


def synthetic_books(n: int, start_id: int = 100) -> list[Book]:
    """`n` deterministic books for benchmarks and the kill test (text long enough to look like a blurb)."""
    books = []
    for i in range(n):
        a, b = _SUBJECTS[i % 10], _SUBJECTS[(i * 7 + 3) % 10]
        paragraphs = [f"Book {i}: a story of the {a} and the {b}. " * 12, f"Part {i % 5 + 1} of a series. " * 6]
        books.append(Book(start_id + i, f"The {a.title()} of {b.title()} {i}", f"Author {i % 17}", paragraphs,
                          [_GENRES[i % 5], _GENRES[(i + 2) % 5]] if i % 3 else [_GENRES[i % 5]],
                          10000 + 37 * i, f"{i % 6}.99", f"20{10 + i % 14:02d}-0{1 + i % 9}-1{i % 10}"))
    return books


def synthetic_questions(n: int, start_id: int = 50000) -> list[Question]:
    questions = []
    for i in range(n):
        t1, t2 = _TAGS[i % 8], _TAGS[(i * 3 + 1) % 8]
        questions.append(Question(start_id + i, f"How to combine {t1} with {t2} in case {i}?",
                                  [f"I am trying to use {t1} together with {t2}. " * 8, "What am I missing? " * 3],
                                  f"import {t1}\nresult = {t1}.run({i})\nprint(result)", unique([t1, t2]),
                                  i % 50 - 5, i % 4, f"20{12 + i % 12}-0{1 + i % 9}-1{i % 10}T12:00:0{i % 10}"))
    return questions


def unique(items):
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------- rendering
def _paragraphs_html(paragraphs: list[str]) -> str:
    return "".join(f"<p>{html.escape(p, quote=False)}</p>\n" for p in paragraphs)


def _category_links(path: list[str]) -> str:
    return "&nbsp;&raquo;&nbsp;".join(f'<a href="/books/category/{slugify(p)}">{html.escape(p)}</a>' for p in path)


def _words_text(words: int) -> str:
    return f"{words:,}"


def _published_text(iso: str) -> str:
    year, month, day = iso.split("-")
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]
    return f"{months[int(month) - 1]} {int(day)}, {year}"


def render_book(book: Book, root: str) -> str:
    """Even ids: JSON-LD + OpenGraph + plain markup; odd ids: schema.org microdata. Both current-style."""
    common = dict(title=html.escape(book.title, quote=False), title_attr=html.escape(book.title),
                  author=html.escape(book.author), author_slug=slugify(book.author), url=root + book.path,
                  cover_url=root + book.cover_path, cover_full=root + book.cover_path.replace("-thumb", ""),
                  short_attr=html.escape(book.paragraphs[0]), description_html=_paragraphs_html(book.paragraphs),
                  published=book.published, published_text=_published_text(book.published),
                  words_text=_words_text(book.words), price=book.price)
    if book.id % 2 == 0:
        json_ld = {"@context": "https://schema.org", "@type": "Book", "name": book.title,
                   "author": {"@type": "Person", "name": book.author}, "description": book.text,
                   "genre": book.labels, "image": root + book.cover_path, "datePublished": book.published,
                   "wordCount": book.words, "url": root + book.path,
                   "offers": {"@type": "Offer", "price": book.price, "priceCurrency": "USD"}}
        category_html = " ; ".join(_category_links(p) for p in book.categories)
        return _template("smashwords_book_jsonld.html").substitute(
            common, json_ld=json.dumps(json_ld).replace("</", "<\\/"), category_html=category_html)
    genre_items = "".join(f'<li itemprop="genre">{_category_links(p)}</li>' for p in book.categories)
    return _template("smashwords_book_microdata.html").substitute(common, genre_items=genre_items)


def render_book_listing(books: list[Book], heading: str, next_path: str | None, root: str) -> str:
    item = _template("smashwords_listing_item.html")
    rows = "".join(item.substitute(url=root + b.path, cover_url=root + b.cover_path,
                                   title=html.escape(b.title, quote=False), author=html.escape(b.author),
                                   author_slug=slugify(b.author), price=b.price, words_text=_words_text(b.words),
                                   category_html=_category_links(b.categories[0]),
                                   short=html.escape(b.paragraphs[0], quote=False)) for b in books)
    next_link = f'<link rel="next" href="{next_path}">' if next_path else ""
    pagination = (f'<li><a href="{next_path}" rel="next"><i class="icon-hand-right"></i></a></li>'
                  if next_path else "")
    return _template("smashwords_listing.html").substitute(heading=html.escape(heading), books=rows,
                                                           next_link=next_link, pagination=pagination)


def _tag_items(tags: list[str]) -> str:
    return "".join(f'<li class="d-inline mr4 js-post-tag-list-item"><a href="/questions/tagged/{t}" '
                   f'class="post-tag flex--item mt0 js-tagname-{t}" rel="tag">{t}</a></li>' for t in tags)


def render_question(q: Question, root: str) -> str:
    body = (f"<p>{html.escape(q.paragraphs[0], quote=False)}</p>\n"
            f"<pre class=\"lang-py s-code-block\"><code>{html.escape(q.code, quote=False)}</code></pre>\n"
            + "".join(f"<p>{html.escape(p, quote=False)}</p>\n" for p in q.paragraphs[1:]))
    answer = _template("stackoverflow_answer.html")
    answers = "".join(answer.substitute(aid=q.id * 10 + i, qid=q.id, ascore=3 - i,
                                        answer_body=f"<p>Answer {i} to question {q.id}: try the other way.</p>")
                      for i in range(q.answers))
    return _template("stackoverflow_question.html").substitute(
        title=html.escape(q.title, quote=False), title_attr=html.escape(q.title), first_tag=q.tags[0],
        url=root + q.path, excerpt_attr=html.escape(q.paragraphs[0][:120]), qid=q.id, slug=slugify(q.title),
        asked=q.asked, asked_title=q.asked.replace("T", " ") + "Z", asked_relative="2 years ago", views=1234,
        score=q.score, body_html=body, tag_items=_tag_items(q.tags), answers=q.answers, answer_html=answers)


def render_question_listing(questions: list[Question], tag: str, next_path: str | None) -> str:
    item = _template("stackoverflow_listing_item.html")
    rows = "".join(item.substitute(qid=q.id, slug=slugify(q.title), title=html.escape(q.title, quote=False),
                                   score=q.score, answers=q.answers, excerpt=html.escape(q.paragraphs[0][:100]),
                                   tag_items=_tag_items(q.tags), asked_title=q.asked, asked_relative="2 years ago")
                   for q in questions)
    pagination = (f'<a class="s-pagination--item js-pagination-item" href="{html.escape(next_path)}" rel="next" '
                  f'title="Go to next page">Next</a>' if next_path else "")
    return _template("stackoverflow_listing.html").substitute(tag=tag, summaries=rows, pagination=pagination)


def api_item(q: Question, root: str) -> dict:
    """A question as `/2.3/questions?filter=withbody` returns it (title HTML-escaped, body HTML)."""
    body = (f"<p>{html.escape(q.paragraphs[0], quote=False)}</p>\n<pre><code>{html.escape(q.code, quote=False)}"
            f"</code></pre>\n" + "".join(f"<p>{html.escape(p, quote=False)}</p>\n" for p in q.paragraphs[1:]))
    from datetime import datetime, timezone
    created = int(datetime.fromisoformat(q.asked).replace(tzinfo=timezone.utc).timestamp())
    return {"tags": q.tags, "is_answered": q.answers > 0, "view_count": 1234, "answer_count": q.answers,
            "score": q.score, "creation_date": created, "question_id": q.id, "link": root + q.path,
            "title": html.escape(q.title), "body": body}


# A real PNG header + IHDR is enough for "is this an image" checks; the pixels are never decoded here.
PNG_BYTES = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x03\x08\x02\x00\x00\x00"
             b"\x12\x16\xf1M\x00\x00\x00\x12IDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x84\x19`\x0c\x00F\xe6\x07\xf9\xa7"
             b"\xc3\x8a\x8d\x00\x00\x00\x00IEND\xaeB`\x82")
JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"


# ---------------------------------------------------------------- faults and the server
@dataclass
class Fault:
    """How to answer one request instead of the normal page."""
    status: int = 200
    body: bytes | None = None            # None: the normal page (possibly truncated)
    headers: dict = field(default_factory=dict)
    delay: float = 0.0                   # seconds to sleep before answering (slower than the client's timeout)
    truncate_at: int | None = None       # serve only the first N bytes of the normal page, honest length
    short_read: bool = False             # promise the full Content-Length, send half, close the connection
    drip: float = 0.0                    # send the response one byte every `drip` seconds (a tarpit) ...
    drip_headers: bool = False           # ... from the status line on (True) or only the body (False)
    raw: bytes | None = None             # these exact bytes as the whole response (any lie a server can tell)


@dataclass
class Route:
    body: bytes
    content_type: str = "text/html; charset=utf-8"


class LocalSite:
    """Both sites (and an API) on one threaded local server. Thread-safe fault table and request log."""

    def __init__(self, robots: str = "User-agent: *\nDisallow: /private/\n"):
        self.routes: dict[str, Route] = {}
        self.robots = robots
        self.faults: dict[str, list[tuple[Fault, int | None]]] = {}
        self.requests: list[tuple[str, str, float]] = []
        self.authorizations: list[tuple[str, str]] = []      # credentials a client sent (it never should)
        self.page_delay = 0.0            # applied to every non-robots request (kill test, benchmarks)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.books: list[Book] = []
        self.questions: list[Question] = []
        self.api_pages: dict[int, dict] = {}

    # ---------------------------------------------------- content
    @classmethod
    def build(cls, books: list[Book] | None = None, questions: list[Question] | None = None, per_page: int = 3,
              robots: str | None = None) -> "LocalSite":
        site = cls(robots) if robots is not None else cls()
        site.books = BOOKS if books is None else books
        site.questions = QUESTIONS if questions is None else questions
        site.per_page = per_page
        return site

    def render(self) -> None:
        """(Re)build every route; call after `start` (pages embed absolute URLs of this server)."""
        root = self.root
        for book in self.books:
            self.add(book.path, render_book(book, root))
            self.add(book.cover_path, PNG_BYTES, "image/png")
        pages = [self.books[i:i + self.per_page] for i in range(0, len(self.books), self.per_page)] or [[]]
        for n, chunk in enumerate(pages):
            path = "/books/category/1" + (f"/{n * 20}" if n else "")
            next_path = f"/books/category/1/{(n + 1) * 20}" if n + 1 < len(pages) else None
            # the listing links with absolute www.smashwords.com-style URLs of this server, like the real site
            self.add(path, render_book_listing(chunk, "Fiction and nonfiction, newest", next_path, root))
        # a second category listing the same books again: the URL stage must not duplicate them
        self.add("/books/category/2", render_book_listing(self.books[::2], "Staff picks", None, root))
        qpages = [self.questions[i:i + self.per_page] for i in range(0, len(self.questions), self.per_page)] or [[]]
        for n, chunk in enumerate(qpages):
            path = "/questions/tagged/python" + (f"?tab=votes&page={n + 1}" if n else "")
            next_path = f"/questions/tagged/python?tab=votes&page={n + 2}" if n + 1 < len(qpages) else None
            self.add(path, render_question_listing(chunk, "python", next_path))
        for q in self.questions:
            self.add(q.path, render_question(q, root))
        size = self.per_page
        chunks = [self.questions[i:i + size] for i in range(0, len(self.questions), size)] or [[]]
        for n, chunk in enumerate(chunks, start=1):
            self.api_pages[n] = {"items": [api_item(q, root) for q in chunk], "has_more": n < len(chunks),
                                 "quota_max": 300, "quota_remaining": 300 - n}

    def add(self, path: str, body: str | bytes, content_type: str = "text/html; charset=utf-8") -> None:
        # surrogatepass: a hostile title with a lone surrogate is served as the invalid bytes a real site would send
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        self.routes[path] = Route(data, content_type)

    def fault(self, path: str, fault: Fault, times: int | None = None) -> None:
        """Answer `path` with `fault` (the next `times` requests, or always when None); faults queue up in order."""
        with self._lock:
            self.faults.setdefault(path, []).append((fault, times))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path)
            if not queue:
                return None
            fault, times = queue[0]
            if times is not None:
                times -= 1
                if times <= 0:
                    queue.pop(0)
                else:
                    queue[0] = (fault, times)
            return fault

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for p, _, _ in self.requests if p == path)

    def times(self, prefix: str) -> list[float]:
        with self._lock:
            return [t for p, _, t in self.requests if p.startswith(prefix)]

    # ---------------------------------------------------- serving
    @property
    def root(self) -> str:
        assert self._server is not None, "start() the site first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.root + path

    def start(self) -> "LocalSite":
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True          # headers and body go out in two writes: no 40 ms ACK stalls

            def log_message(self, *args):            # keep test output clean
                pass

            def do_GET(self):
                site._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.render()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalSite":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            self.requests.append((path, handler.headers.get("User-Agent", ""), time.monotonic()))
            if handler.headers.get("Authorization"):
                self.authorizations.append((path, handler.headers["Authorization"]))
        if parts.path == "/robots.txt":
            fault = self._take_fault("/robots.txt")
            if fault is not None and fault.status != 200:
                return self._send(handler, fault.status, b"robots unavailable", "text/plain", fault.headers)
            return self._send(handler, 200, self.robots.encode(), "text/plain; charset=utf-8")
        if self.page_delay:
            time.sleep(self.page_delay)
        if parts.path == "/2.3/questions":
            return self._api(handler, parse_qs(parts.query))
        fault = self._take_fault(path) or self._take_fault(parts.path)
        route = self.routes.get(path) or self.routes.get(parts.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.raw is not None:
                handler.close_connection = True
                try:
                    handler.wfile.write(fault.raw)
                except OSError:          # the client stopped reading: that is allowed
                    pass
                return None
            if fault.drip:
                return self._drip(handler, fault, route.body if route is not None else b"<p>slow</p>" * 100)
            if fault.body is not None:
                return self._send(handler, fault.status, fault.body, fault.headers.get("Content-Type", "text/html"),
                                  fault.headers)
            if fault.status != 200:
                return self._send(handler, fault.status, f"<h1>{fault.status}</h1>".encode(), "text/html",
                                  fault.headers)
            if route is not None and fault.truncate_at is not None:
                return self._send(handler, 200, route.body[:fault.truncate_at], route.content_type)
            if route is not None and fault.short_read:
                handler.send_response(200)
                handler.send_header("Content-Type", route.content_type)
                handler.send_header("Content-Length", str(len(route.body)))
                handler.send_header("Connection", "close")
                handler.end_headers()
                handler.wfile.write(route.body[: len(route.body) // 2])
                handler.wfile.flush()
                handler.close_connection = True
                return None
        if route is None:
            return self._send(handler, 404, b"<h1>Not found</h1>", "text/html")
        return self._send(handler, 200, route.body, route.content_type)

    @staticmethod
    def _drip(handler: BaseHTTPRequestHandler, fault: Fault, body: bytes) -> None:
        """A tarpit: a well-formed response, one byte at a time, each sooner than any sane read timeout."""
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        handler.close_connection = True
        try:
            if not fault.drip_headers:
                handler.wfile.write(head)
                head = b""
            for byte in head + body:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(fault.drip)
        except OSError:                  # the client hung up (its deadline): the point of the exercise
            pass

    def _api(self, handler: BaseHTTPRequestHandler, query: dict) -> None:
        fault = self._take_fault("/2.3/questions")
        if fault is not None:
            return self._send(handler, fault.status, fault.body or b"{}", "application/json; charset=utf-8",
                              fault.headers)
        if query.get("filter") != ["withbody"] or query.get("site") != ["stackoverflow"]:
            body = {"error_id": 400, "error_name": "bad_parameter", "error_message": "filter and site are required"}
            return self._send(handler, 400, json.dumps(body).encode(), "application/json; charset=utf-8")
        page = int(query.get("page", ["1"])[0])
        data = self.api_pages.get(page, {"items": [], "has_more": False, "quota_max": 300, "quota_remaining": 1})
        return self._send(handler, 200, json.dumps(data).encode(), "application/json; charset=utf-8")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str,
              headers: dict | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                if key.lower() != "content-type":
                    handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout test): nothing to do
            pass


def serve_forever(books: int = 200, questions: int = 200, per_page: int = 20, port_file: str | None = None) -> None:
    """Run a bigger synthetic site in this process until killed (bench/scrape.py runs it in a child process)."""
    site = LocalSite.build(synthetic_books(books), synthetic_questions(questions), per_page=per_page,
                           robots="User-agent: *\nDisallow: /private/\n")
    site.start()
    if port_file:
        Path(port_file).write_text(site.root)
    threading.Event().wait()


# ---------------------------------------------------------------- the client's waits, without wall-clock time
class WaitRecorder:
    """Stands in for the polite client's clock and sleep: time stands still and every wait it asks for is
    recorded instead of slept. Politeness is then checked on the schedule the client computed (deterministic
    on any machine), never on arrival times measured on 2 busy cores.

        waits = WaitRecorder().install(monkeypatch)     # every command run in this test uses it
        ... run a command ...
        assert sorted(waits.waits) == [0.15, 0.3, 0.45]
    """

    NOW = 1000.0

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.NOW

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(round(seconds, 6))

    def install(self, monkeypatch) -> "WaitRecorder":
        import scraper.cli
        import scraper.client

        recorder = self

        class RecordingClient(scraper.client.PoliteClient):
            def __init__(self, **kwargs):
                super().__init__(sleep=recorder.sleep, clock=recorder.clock, **kwargs)

        monkeypatch.setattr(scraper.cli, "PoliteClient", RecordingClient)
        return self
