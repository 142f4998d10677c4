"""HTML → readable plain text, the one conversion every site adapter uses.

The seeds called `get_text()` and glued sentences from neighbouring paragraphs together ("end.Next").
Here block elements become line breaks, `<br><br>` and paragraphs become blank lines, entities are decoded
by the parser, runs of whitespace collapse to one space, and `<pre>` blocks keep their exact text so code
samples in StackOverflow questions stay readable.

    >>> html_to_text("<p>One &amp; two.</p><p>Three<br>four</p><pre>a  = 1\\n  b</pre>")
    'One & two.\\n\\nThree\\nfour\\n\\na  = 1\\n  b'
"""
from __future__ import annotations

import re
from typing import Iterator

from bs4 import BeautifulSoup, Comment, NavigableString, Tag
from bs4.element import CData, Declaration, Doctype, ProcessingInstruction

# Blocks separated by a blank line (paragraph level) and by a single newline (line level).
PARAGRAPH_TAGS = frozenset({"p", "pre", "blockquote", "ul", "ol", "dl", "table", "h1", "h2", "h3", "h4", "h5", "h6",
                            "section", "article", "header", "footer", "figure", "hr", "form"})
LINE_TAGS = frozenset({"div", "li", "dt", "dd", "tr", "br", "address", "caption", "figcaption", "main", "nav",
                       "aside", "details", "summary", "center"})
SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title", "meta", "link", "svg",
                       "button", "select", "option", "textarea", "iframe", "object"})
CELL_TAGS = frozenset({"td", "th"})

_SPACES = re.compile(r"[ \t\f\v\r\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# Zero-width characters, and C0 controls other than whitespace (a NUL, an escape sequence): invisible on the page,
# junk in a training text. Tab, newline, CR, VT and FF are whitespace and handled as such.
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\ufeff\x00-\x08\x0e-\x1f\x7f]")
_NOT_TEXT = (Comment, CData, Declaration, Doctype, ProcessingInstruction)


_END = object()


def _walk(node: Tag) -> Iterator[tuple[str, object]]:
    """Yield ("text", str), ("pre", str), ("br", 1) and ("break", n) events in document order.

    Iterative (a stack of child iterators, each with the events to emit when it is done): a page nested
    thousands of elements deep is text like any other, not a RecursionError.
    """
    stack: list[tuple[Iterator, tuple]] = [(iter(node.children), ())]
    while stack:
        children, closing = stack[-1]
        child = next(children, _END)
        if child is _END:
            stack.pop()
            yield from closing
            continue
        if isinstance(child, NavigableString):
            if not isinstance(child, _NOT_TEXT):
                yield "text", str(child)
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name.lower() if child.name else ""
        if name in SKIP_TAGS or name == "img":
            continue
        if name == "br":
            yield "br", 1
        elif name == "pre":
            yield "break", 2
            yield "pre", child.get_text()
            yield "break", 2
        elif name in PARAGRAPH_TAGS:
            yield "break", 2
            stack.append((iter(child.children), (("break", 2),)))
        elif name in LINE_TAGS:
            yield "break", 1
            stack.append((iter(child.children), (("break", 1),)))
        elif name in CELL_TAGS:
            yield "text", " "
            stack.append((iter(child.children), (("text", " "),)))
        else:
            stack.append((iter(child.children), ()))


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_html(html: str | bytes) -> BeautifulSoup:
    """Parse with lxml (fast, forgiving with truncated pages); bytes let bs4 honour the page's own charset.

    A str with lone surrogates (JSON `"\\ud800"` in an API body or a JSON-LD description) makes lxml raise
    UnicodeEncodeError: a surrogate pair is joined, a lone half becomes U+FFFD, as the CSV writer does.
    """
    if isinstance(html, str) and _SURROGATE.search(html):
        html = html.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return BeautifulSoup(html, "lxml")


def html_to_text(html: str | bytes | Tag | None) -> str:
    """Readable text of an HTML fragment or element: blocks on their own lines, code kept verbatim."""
    if html is None:
        return ""
    node = html if isinstance(html, Tag) else parse_html(html)
    out: list[str] = []          # finished chunks
    line: list[str] = []         # inline text of the current block, whitespace not yet collapsed
    pending_break = 0            # newlines owed before the next visible text

    def flush_line() -> None:
        text = _SPACES.sub(" ", _INVISIBLE.sub("", "".join(line))).replace("\n", " ")
        text = re.sub(r" {2,}", " ", text).strip()
        line.clear()
        if text:
            emit(text)

    def emit(text: str) -> None:
        nonlocal pending_break
        if out:
            out.append("\n" * max(pending_break, 0))
        out.append(text)
        pending_break = 0

    for kind, value in _walk(node):
        if kind == "text":
            line.append(value)  # type: ignore[arg-type]
        elif kind == "break":
            flush_line()
            pending_break = max(pending_break, value)  # type: ignore[arg-type]
        elif kind == "br":  # `<br><br>` is how these sites write a paragraph break
            flush_line()
            pending_break = min(pending_break + 1, 2)
        else:  # pre: keep the code's own spacing, drop only leading/trailing blank lines
            flush_line()
            code = _INVISIBLE.sub("", str(value)).replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
            code = "\n".join(l.rstrip() for l in code.strip("\n").split("\n"))
            if code.strip():
                pending_break = max(pending_break, 2)
                emit(code)
                pending_break = 2
    flush_line()
    return normalise_text("".join(out))


def normalise_text(text: str) -> str:
    """Trim each line, keep at most one blank line in a row, no leading/trailing blank lines."""
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [l.rstrip() for l in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").rstrip()


def clean_inline(text: str | None) -> str:
    """One-line cleanup for titles, names and labels: entities already decoded, whitespace collapsed."""
    if not text:
        return ""
    return re.sub(r"\s+", " ", _INVISIBLE.sub("", text.replace("\u00a0", " "))).strip()
