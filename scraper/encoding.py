"""Page bytes → text, in the order browsers use (WHATWG encoding sniffing), with the fallbacks a scraper needs.

    decoded = decode_html(body_bytes, "text/html; charset=iso-8859-1")
    decoded.text, decoded.encoding, decoded.source, decoded.questionable

The order: a byte order mark (UTF-8, UTF-16LE/BE) wins over everything; then the HTTP header's charset; then a
`<meta charset>` / `<meta http-equiv="Content-Type" content="...; charset=...">` in the first 1024 bytes; then
(for XHTML, as the parser used to honour it) an `<?xml ... encoding="..."?>` declaration; then a default. Labels are read as the WHATWG Encoding Standard reads them ("latin1", "iso-8859-1" and "ascii" all
mean windows-1252; "gb2312" means GBK; "utf-16" in a `<meta>` means UTF-8), and windows-1252 decodes its five
unassigned bytes to the C1 controls, as browsers do, rather than failing.

Where a declaration and the bytes disagree, the bytes win, because a row of mojibake is worse than a page
read against its label:
- a declared legacy encoding (windows-1252, ...) on bytes that are valid UTF-8 with multi-byte sequences is
  read as UTF-8 (servers that send "charset=ISO-8859-1" for every page are common; real windows-1252 text is
  almost never valid UTF-8, since a letter like `é` followed by an ASCII letter is an invalid sequence);
- a declared UTF-8 on bytes with more invalid sequences than valid multi-byte ones is skipped for the next
  clue (a windows-1252 page labelled UTF-8), while a mostly-UTF-8 page with a stray bad byte stays UTF-8;
- a declared UTF-16 without a BOM on bytes that do not look like UTF-16 (see `utf16_order`) is skipped.
Without any usable declaration: UTF-8 when the bytes are valid UTF-8, UTF-16 when they look like it, else
windows-1252.

`questionable` is True when the text may be wrong in a way another decode could fix (a windows-1252 guess, a
declaration the bytes contradicted, replacement characters, UTF-16 without a BOM): a page that then yields
nothing is a retryable error, never a permanent one (see scraper.details_scraper). Bytes with NULs that are
not UTF-16 are binary, not text in any encoding, and are not questionable.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

UTF8, UTF16LE, UTF16BE, WINDOWS_1252 = "utf-8", "utf-16-le", "utf-16-be", "windows-1252"
PRESCAN_BYTES = 1024

# WHATWG Encoding Standard: Python codec → its labels (https://encoding.spec.whatwg.org/#names-and-labels).
# Left out on purpose: the "replacement" labels (iso-2022-kr, hz-gb-2312, ...), which a browser refuses to decode,
# and x-user-defined; such a label is skipped for the next clue.
_LABELS = {
    UTF8: "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8",
    "cp866": "866 cp866 csibm866 ibm866",
    "iso8859-2": "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2",
    "iso8859-3": "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3",
    "iso8859-4": "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4",
    "iso8859-5": "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 iso_8859-5:1988",
    "iso8859-6": "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 iso-8859-6-e "
                 "iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987",
    "iso8859-7": "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 iso88597 "
                 "iso_8859-7 iso_8859-7:1987 sun_eu_greek",
    "iso8859-8": "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 iso88598 "
                 "iso_8859-8 iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical",
    "iso8859-10": "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6",
    "iso8859-13": "iso-8859-13 iso8859-13 iso885913",
    "iso8859-14": "iso-8859-14 iso8859-14 iso885914",
    "iso8859-15": "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9",
    "iso8859-16": "iso-8859-16",
    "koi8-r": "cskoi8r koi koi8 koi8-r koi8_r",
    "koi8-u": "koi8-ru koi8-u",
    "mac-roman": "csmacintosh mac macintosh x-mac-roman",
    "cp874": "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874",
    "cp1250": "cp1250 windows-1250 x-cp1250",
    "cp1251": "cp1251 windows-1251 x-cp1251",
    WINDOWS_1252: "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 iso88591 "
                  "iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
    "cp1253": "cp1253 windows-1253 x-cp1253",
    "cp1254": "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 iso_8859-9:1989 l5 latin5 "
              "windows-1254 x-cp1254",
    "cp1255": "cp1255 windows-1255 x-cp1255",
    "cp1256": "cp1256 windows-1256 x-cp1256",
    "cp1257": "cp1257 windows-1257 x-cp1257",
    "cp1258": "cp1258 windows-1258 x-cp1258",
    "mac-cyrillic": "x-mac-cyrillic x-mac-ukrainian",
    "gb18030": "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030",
    "big5hkscs": "big5 big5-hkscs cn-big5 csbig5 x-x-big5",
    "euc_jp": "cseucpkdfmtjapanese euc-jp x-euc-jp",
    "iso2022_jp": "csiso2022jp iso-2022-jp",
    "cp932": "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis",
    "cp949": "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 ksc_5601 "
             "windows-949",
    UTF16BE: "unicodefffe utf-16be",
    UTF16LE: "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le",
}
LABELS: dict[str, str] = {label: codec for codec, labels in _LABELS.items() for label in labels.split()}
_BOMS = ((b"\xef\xbb\xbf", UTF8), (b"\xfe\xff", UTF16BE), (b"\xff\xfe", UTF16LE))
# windows-1252 as WHATWG defines it: Python's cp1252 plus the five bytes it leaves unassigned, as C1 controls.
_CP1252_HIGH = {byte: (bytes([byte]).decode("cp1252", "ignore") or chr(byte)) for byte in range(0x80, 0xA0)}
_CP1252_TABLE = str.maketrans({chr(byte): char for byte, char in _CP1252_HIGH.items()})

_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)
_COMMENT = re.compile(rb"<!--.*?(?:-->|$)", re.DOTALL)
_META = re.compile(rb"<meta[\s/][^>]*>?", re.IGNORECASE)
_ATTRIBUTE = re.compile(rb"""([^\s=/>]+)(?:\s*=\s*("[^"]*"?|'[^']*'?|[^\s>]+))?""")
_XML_DECLARATION = re.compile(rb"""\s*<\?xml[^>]*?\sencoding\s*=\s*["']([^"']+)["']""")
_CONTENT_CHARSET = re.compile(rb"""charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))""", re.IGNORECASE)


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str                        # the Python codec used
    source: str                          # how it was chosen: "BOM", "HTTP header", "<meta>", "UTF-8 bytes", ...
    questionable: bool = False


def codec_for(label: str | bytes | None) -> str | None:
    """The codec a WHATWG encoding label names (surrounding whitespace and case ignored); None when unknown."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    return LABELS.get(label.strip("\t\n\f\r ").lower())


def header_charset(content_type: str) -> str | None:
    match = _HEADER_CHARSET.search(content_type or "")
    return match.group(1) if match else None


def meta_charset(data: bytes) -> str | None:
    """The label a `<meta>` in the first 1024 bytes declares (WHATWG prescan, simplified: comments skipped,
    `charset=` first, else `content=` with `http-equiv="content-type"`); None when there is none."""
    head = _COMMENT.sub(b"", data[:PRESCAN_BYTES])
    for tag in _META.finditer(head):
        attributes: dict[bytes, bytes] = {}
        for name, value in _ATTRIBUTE.findall(tag.group()[5:]):
            attributes.setdefault(name.lower(), value.strip(b"\"'"))
        if attributes.get(b"charset"):
            return attributes[b"charset"].decode("ascii", "replace")
        if attributes.get(b"http-equiv", b"").lower() == b"content-type" and b"content" in attributes:
            found = _CONTENT_CHARSET.search(attributes[b"content"])
            if found:
                return next(g for g in found.groups() if g is not None).decode("ascii", "replace")
    return None


def _utf8_evidence(data: bytes) -> tuple[int, int]:
    """(characters decoded from valid multi-byte UTF-8 sequences, invalid bytes)."""
    text = data.decode(UTF8, "replace")
    replaced = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")      # a U+FFFD the page itself holds is valid
    return sum(1 for char in text if ord(char) > 0x7F and char != "\ufffd"), max(replaced, 0)


def utf16_order(data: bytes) -> str | None:
    """UTF-16LE or UTF-16BE when BOM-less bytes look like UTF-16 text (a quarter or more NUL bytes, nearly all on
    one side of their pairs, and a clean decode, a last odd byte of a cut transfer aside); None otherwise."""
    pairs = data[:len(data) // 2 * 2]
    nuls = pairs.count(0)
    if len(pairs) < 4 or nuls < len(pairs) // 4:
        return None
    for codec, side in ((UTF16LE, pairs[1::2]), (UTF16BE, pairs[0::2])):
        if side.count(0) >= 0.9 * nuls:
            try:
                pairs.decode(codec)
            except UnicodeDecodeError:
                return None
            return codec
    return None


def _decode(data: bytes, codec: str) -> tuple[str, bool]:
    """Text, and whether anything had to be replaced."""
    if codec == WINDOWS_1252:
        return data.decode("latin-1").translate(_CP1252_TABLE), False
    try:
        return data.decode(codec), False
    except UnicodeDecodeError:
        return data.decode(codec, "replace"), True


def _clues(data: bytes, content_type: str) -> list[tuple[str, str]]:
    """(codec, where it was declared) for each usable declaration, the header's first; unknown labels skipped."""
    clues = []
    if codec_for(header_charset(content_type)):
        clues.append((codec_for(header_charset(content_type)), "HTTP header"))
    xml = _XML_DECLARATION.match(data)
    for codec, source in ((codec_for(meta_charset(data)), "<meta>"),
                          (codec_for(xml.group(1)) if xml else None, "XML declaration")):
        if codec:
            # WHATWG: a <meta> that says UTF-16 was read as ASCII, so it cannot be true: it means UTF-8.
            clues.append((UTF8 if codec in (UTF16LE, UTF16BE) else codec, source))
    return clues


def decode_html(data: bytes, content_type: str = "") -> Decoded:
    """The page's text (see the module docstring for the order and the fallbacks)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            text, replaced = _decode(data[len(bom):], codec)
            return Decoded(text, codec, "BOM", replaced)
    multibyte, invalid = _utf8_evidence(data)
    order = utf16_order(data)
    contradicted = []
    for codec, source in _clues(data, content_type):
        if codec == UTF8 and invalid > multibyte or codec in (UTF16LE, UTF16BE) and order != codec:
            contradicted.append(source)                  # the bytes say otherwise: try the next clue
            continue
        if codec not in (UTF8, UTF16LE, UTF16BE) and multibyte and not invalid:
            return Decoded(data.decode(UTF8), UTF8, f"UTF-8 bytes (the {source} said {codec})")
        text, replaced = _decode(data, codec)
        return Decoded(text, codec, source, replaced or bool(contradicted))
    if not invalid:
        return Decoded(data.decode(UTF8), UTF8, "UTF-8 bytes")
    if order is not None:
        return Decoded(data.decode(order, "replace"), order, "UTF-16 bytes without a BOM", True)      # a guess
    text, _ = _decode(data, WINDOWS_1252)
    why = f"the {' and '.join(contradicted)} contradicted by the bytes" if contradicted else "no charset declared"
    # NUL bytes outside UTF-16 mean binary data: no text encoding would read it as a page, so nothing is in doubt.
    return Decoded(text, WINDOWS_1252, f"default ({why})", b"\x00" not in data)
