"""robots.txt as RFC 9309 reads it: pure functions, no I/O (the polite client fetches the file and asks here).

    robots = parse_robots(decode_robots(body_bytes))
    robots.can_fetch(user_agent, "https://example.com/books/view/8")     # False when disallowed
    robots.deciding_rule(user_agent, url)                                # Rule(allow=False, pattern="/books/view/8")
    robots.crawl_delay(user_agent)                                       # seconds (float) or None

What it does, and why it is not `urllib.robotparser` (first match wins, so a `Disallow` after a broader
`Allow` was ignored; substring user-agent matching; no wildcards; whole-number Crawl-delays) nor `protego`
(it matches a group's user-agent anywhere in the full User-Agent header, so `User-agent: research` picked the
group for our "... research scraper)" header; it reads `%2A` in a rule as a wildcard; it drops an infinite
Crawl-delay, which must block the host):
- the longest (most specific) matching rule wins, counted in octets of the percent-encoded pattern; an
  `Allow` wins a tie; no rule matching means allowed; `Disallow:` with no value is no rule; `/robots.txt`
  itself is always allowed;
- `*` matches any run of characters and a trailing `$` anchors the end; `%2A` and `%24` in a rule are a
  literal `*` and `$` (RFC 9309 section 2.2.3), as is a `$` that is not last;
- rule paths and URL paths are compared after percent-encoding normalisation: non-ASCII characters as their
  UTF-8 bytes percent-encoded, escapes of unreserved characters decoded (`%62` is `b`), other escapes
  upper-cased (`%e3` is `%E3`); the query is part of what rules match, the fragment is not;
- groups: one or more `User-agent` lines then rules; a `User-agent` line after a rule starts a new group;
  blank lines, comments and other records (`Sitemap`) do not end a group; the crawler's product token (the
  User-Agent header up to its first `/` or space) is matched case-insensitively against each line's token,
  every matching group is merged into one, and the `*` groups apply only when no group names us;
- a BOM is dropped and only the first 500 KiB are read, cut back to the last complete line (a rule cut in
  half could allow more than it says);
- `Crawl-delay` keeps fractional values ("0.5"); negative, NaN and unreadable ones are ignored; `inf` is kept
  (the client then skips the host); merged groups take the largest.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

ROBOTS_MAX_BYTES = 500 * 1024            # RFC 9309 lets a crawler stop parsing robots.txt here
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# ASCII characters a URL never carries literally (requests would encode them): compared in their encoded form.
_MUST_ENCODE = frozenset(' "<>\\^`{|}')
_HEX = frozenset("0123456789abcdefABCDEF")
_TOKEN = re.compile(r"[A-Za-z_-]+")
_LINE_END = re.compile(r"\r\n|\r|\n")
_KEYS = {"user-agent": "user-agent", "useragent": "user-agent", "user agent": "user-agent",
         "allow": "allow", "disallow": "disallow",
         # misspellings seen in real files: honouring a Disallow someone mistyped is the polite reading
         "dissallow": "disallow", "dissalow": "disallow", "disalow": "disallow", "diasllow": "disallow",
         "disallaw": "disallow", "crawl-delay": "crawl-delay", "crawl delay": "crawl-delay"}
_WILDCARD, _ANCHOR = "*", "$"            # the only special characters left literal in a normalised pattern


# ---------------------------------------------------------------- bytes → text
def decode_robots(data: bytes) -> str:
    """robots.txt bytes as text: the first 500 KiB, cut back to the last complete line when longer; UTF-8 with
    a BOM dropped; undecodable bytes replaced (RFC 9309 robots.txt is UTF-8)."""
    if len(data) > ROBOTS_MAX_BYTES:
        data = data[:ROBOTS_MAX_BYTES]
        last_end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        data = data[:last_end + 1] if last_end >= 0 else b""
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


# ---------------------------------------------------------------- percent-encoding
def normalise(text: str, *, pattern: bool) -> str:
    """`text` (a rule's path pattern, or a URL's path and query) in the one form both are compared in.

    In a pattern `*` stays the wildcard and a final `$` the anchor; everywhere else a literal `*` or `$` becomes
    `%2A` / `%24`, which is how a rule spells them, so `Disallow: /a-%2A` matches the URL `/a-*`.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        hex_pair = text[i + 1:i + 3]
        if char == "%" and len(hex_pair) == 2 and set(hex_pair) <= _HEX:
            decoded = chr(int(hex_pair, 16))
            out.append(decoded if decoded in UNRESERVED else "%" + hex_pair.upper())
            i += 3
            continue
        if pattern and char == _WILDCARD:
            out.append(_WILDCARD)
        elif pattern and char == _ANCHOR and i == n - 1:
            out.append(_ANCHOR)
        elif char in "*$%" or ord(char) > 0x7E or ord(char) < 0x21 or char in _MUST_ENCODE:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
        i += 1
    return "".join(out)


def url_path(url: str) -> str:
    """The part of `url` rules are matched against: path (at least `/`) and `?query`, without the fragment."""
    without_fragment = url.partition("#")[0]
    try:
        parts = urlsplit(without_fragment)
    except ValueError:                   # an unreadable URL: match what follows the authority, as written
        parts = None
    if parts is None:
        rest = without_fragment.split("://", 1)[-1]
        path = "/" + rest.partition("/")[2]
    else:
        path = parts.path or "/"
        if "?" in without_fragment.split("://", 1)[-1]:
            path += "?" + parts.query
    return normalise(path if path.startswith("/") else "/" + path, pattern=False)


# ---------------------------------------------------------------- matching
@dataclass(frozen=True)
class Rule:
    """One `Allow`/`Disallow` line, its pattern normalised."""
    allow: bool
    pattern: str

    @property
    def priority(self) -> int:
        """The rule's specificity: octets in the encoded pattern (RFC 9309 2.2.2's "most octets")."""
        return len(self.pattern)

    def matches(self, path: str) -> bool:
        return pattern_matches(self.pattern, path)

    def __str__(self) -> str:
        return f"{'Allow' if self.allow else 'Disallow'}: {self.pattern}"


@lru_cache(maxsize=4096)
def _pieces(pattern: str) -> tuple[tuple[str, ...], bool]:
    anchored = pattern.endswith(_ANCHOR)
    body = pattern[:-1] if anchored else pattern
    return tuple(body.split(_WILDCARD)), anchored


def pattern_matches(pattern: str, path: str) -> bool:
    """Whether a normalised pattern matches a normalised path from its start.

    Greedy leftmost search of the pieces between wildcards, linear in the path: a regex of many `.*` on a long
    URL can backtrack for minutes, and robots.txt is written by strangers.
    """
    pieces, anchored = _pieces(pattern)
    first = pieces[0]
    if not path.startswith(first):
        return False
    if len(pieces) == 1:
        return path == first if anchored else True
    position = len(first)
    for piece in pieces[1:-1]:
        found = path.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    last = pieces[-1]
    if anchored:
        return len(path) - len(last) >= position and path.endswith(last)
    return path.find(last, position) >= 0


def deciding_rule(rules: list[Rule], path: str) -> Rule | None:
    """The rule that decides `path`: the longest matching pattern, an Allow on a tie; None when none matches."""
    best: Rule | None = None
    for rule in rules:
        if (best is None or (rule.priority, rule.allow) > (best.priority, best.allow)) and rule.matches(path):
            best = rule
    return best


# ---------------------------------------------------------------- groups
def product_token(user_agent: str) -> str:
    """`multilabel-text-pipeline/0.1 (+https://...)` → `multilabel-text-pipeline` (lower-cased); `*` stays `*`."""
    value = user_agent.strip()
    if value.startswith("*"):
        return "*"
    match = _TOKEN.match(value)
    return match.group().lower() if match else ""


@dataclass
class Group:
    """The rules that follow one or more `User-agent` lines."""
    agents: list[str] = field(default_factory=list)      # product tokens, lower-cased ("*" for everyone)
    rules: list[Rule] = field(default_factory=list)
    crawl_delay: float | None = None


class Robots:
    """A parsed robots.txt (see the module docstring); answers for any User-Agent header."""

    def __init__(self, groups: list[Group]):
        self.groups = groups
        self._chosen: dict[str, tuple[list[Rule], float | None]] = {}

    def _for(self, user_agent: str) -> tuple[list[Rule], float | None]:
        token = product_token(user_agent)
        chosen = self._chosen.get(token)
        if chosen is None:
            groups = [g for g in self.groups if token and token != "*" and token in g.agents]
            groups = groups or [g for g in self.groups if "*" in g.agents]
            delays = [g.crawl_delay for g in groups if g.crawl_delay is not None]
            # most specific first: `deciding_rule` then tests the others with a tuple comparison, not a match
            rules = sorted((rule for g in groups for rule in g.rules), key=lambda r: (r.priority, r.allow),
                           reverse=True)
            chosen = self._chosen[token] = (rules, max(delays) if delays else None)
        return chosen

    def deciding_rule(self, user_agent: str, url: str) -> Rule | None:
        path = url_path(url)
        if path == "/robots.txt":
            return None
        return deciding_rule(self._for(user_agent)[0], path)

    def can_fetch(self, user_agent: str, url: str) -> bool:
        rule = self.deciding_rule(user_agent, url)
        return rule is None or rule.allow

    def crawl_delay(self, user_agent: str) -> float | None:
        return self._for(user_agent)[1]


def _key_value(line: str) -> tuple[str, str] | None:
    """(known key, value) of one line without its comment; None for blank, unknown or unreadable lines."""
    line = line.partition("#")[0].strip()
    if not line:
        return None
    key, colon, value = line.partition(":")
    key = re.sub(r"\s+", " ", key.strip().lower())
    if colon and key in _KEYS:
        return _KEYS[key], value.strip()
    words = line.split(None, 1)                           # "Disallow /x": a missing colon, read anyway
    if words and words[0].lower() in _KEYS:
        return _KEYS[words[0].lower()], (words[1].strip() if len(words) > 1 else "")
    return None


def parse_crawl_delay(value: str) -> float | None:
    """Seconds, fractional allowed; None for negative, NaN or unreadable values (`inf` is kept)."""
    try:
        delay = float(value)
    except ValueError:
        return None
    return None if math.isnan(delay) or delay < 0 else delay


def parse_robots(text: str) -> Robots:
    """Parse robots.txt text (see the module docstring for the rules it follows)."""
    groups: list[Group] = []
    current: Group | None = None
    collecting_agents = False            # True while User-agent lines add to the same group
    for line in _LINE_END.split(text.removeprefix("\ufeff")):
        parsed = _key_value(line)
        if parsed is None:
            continue
        key, value = parsed
        if key == "user-agent":
            if not collecting_agents:
                current = Group()
                groups.append(current)
                collecting_agents = True
            current.agents.append(product_token(value))
            continue
        collecting_agents = False
        if current is None:              # a rule before any User-agent line belongs to no group
            continue
        if key == "crawl-delay":
            delay = parse_crawl_delay(value)
            if delay is not None:
                current.crawl_delay = delay if current.crawl_delay is None else max(current.crawl_delay, delay)
        elif value:                      # an empty Disallow (or Allow) is no rule at all
            pattern = value if value.startswith(("/", "*")) else "/" + value
            current.rules.append(Rule(allow=key == "allow", pattern=normalise(pattern, pattern=True)))
    return Robots(groups)
