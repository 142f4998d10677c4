"""Download the cover image of every book in a details CSV, politely and resumably.

    python -m scraper.covers --details data/raw/smashwords_details.csv --out data/raw/smashwords_covers/

For each row with a `cover_url` (the Smashwords adapter records it from `itemprop="image"` on book pages,
or `img.book-list-image` on listings), fetch the image with the same polite client as the page scrapers
(robots.txt, per-host delay, retries with backoff, Retry-After) and keep it only if it really is a
complete image: the response says `image/*` AND the bytes start with a JPEG/PNG/GIF/WebP signature AND
they end where that format ends (a truncated transfer is not a cover). Files are written atomically with
`deployment.files` (a hidden `.<file>.partial-<pid>` renamed into place), so an interrupted run never leaves
half an image that looks finished; the next run deletes such leftovers of dead runs, and only those. A second
run on the same `--out` while one is running stops at once with exit code 2 (`covers.lock`). URLs are fetched
and stored without `user:password@`.

Outputs in `--out`:
  <book id>.<jpg|png|gif|webp>   one file per cover, named after the book page (`/books/view/52` → `52.jpg`)
  covers.csv                     url,cover_url,file,content_type,bytes: the book → file map for later stages
  covers.errors.csv              url,status,reason,detail: missing, corrupt, not an image, blocked...
Rerunning skips covers already on disk and permanent errors; transient failures are tried again.
"""
from __future__ import annotations

import hashlib
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import config
from deployment.files import clean_stale, write_bytes
from scraper import cli
from scraper.client import PoliteClient, is_transient
from scraper.sites import strip_row_urls
from scraper.storage import ERROR_COLUMNS, CsvAppender, read_csv_dicts, repair_and_read

MANIFEST_COLUMNS = ("url", "cover_url", "file", "content_type", "bytes")
MAX_IMAGE_BYTES = 15 * 1024 * 1024
IMAGE_KINDS = ("jpg", "png", "gif", "webp")
# The staging names deployment.files gives a cover (`.<book id or URL hash>.<kind>.partial-<pid>`), and the
# `<stem>.<kind>.part<thread id>` names earlier versions of this module wrote.
_STAGING_NAME = re.compile(r"\.([0-9a-f]+\.(?:jpg|png|gif|webp))\.(?:partial|old)-\d+")
_OLD_PARTIAL_NAME = re.compile(r"[0-9a-f]+\.(?:jpg|png|gif|webp)\.part\d+")
# Two rows can name one file (`/books/view/52` and `/books/view/52?ref=x`): the staging name is per process,
# so writes of covers take turns (they are short; the downloads before them run in parallel).
_WRITE_LOCK = threading.Lock()


@dataclass
class CoverSettings:
    details: str
    out: str
    workers: int
    retry_errors: bool
    delay: float
    timeout: float
    deadline: float
    retries: int
    max_redirects: int
    user_agent: str
    ignore_robots: bool


@dataclass
class CoverOutcome:
    url: str                              # the book page
    cover_url: str
    file: str = ""
    content_type: str = ""
    size: int = 0
    status: int | str = ""
    reason: str = ""
    detail: str = ""


# ---------------------------------------------------------------- pure helpers
def image_kind(data: bytes) -> str | None:
    """'jpg', 'png', 'gif' or 'webp' from the file signature; None when the bytes are no image we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def looks_complete(data: bytes, kind: str) -> bool:
    """Whether the image ends where its format ends: catches transfers cut short with an honest status."""
    tail = data.rstrip(b"\x00")[-16:]
    if kind == "jpg":
        return b"\xff\xd9" in tail
    if kind == "png":
        return b"IEND" in data[-16:]
    if kind == "gif":
        return data.endswith(b";") or tail.endswith(b";")
    if kind == "webp":
        return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return False


def cover_stem(book_url: str) -> str:
    """File name (no extension) for a book's cover: the book id when the URL has one, else a URL hash."""
    match = re.search(r"/books/view/(\d+)", urlsplit(book_url).path)
    if match:
        return match.group(1)
    return hashlib.sha1(book_url.encode("utf-8")).hexdigest()[:16]


def check_image(content: bytes, content_type: str) -> tuple[str | None, str, str]:
    """(extension, reason, detail) for a downloaded body: reason is "" when it is a usable cover."""
    declared = content_type.split(";")[0].strip().lower()
    if not content:
        return None, "empty", "empty body"
    if not declared.startswith("image/"):
        return None, "not_image", f"Content-Type {declared or 'missing'}, {len(content)} bytes"
    kind = image_kind(content)
    if kind is None:
        return None, "corrupt_image", f"Content-Type {declared} but the bytes start {content[:8]!r}"
    if not looks_complete(content, kind):
        return None, "truncated_image", f"{kind} without its end marker ({len(content)} bytes)"
    return kind, "", ""


# ---------------------------------------------------------------- one cover
def download_cover(client: PoliteClient, book_url: str, cover_url: str, out_dir: Path) -> CoverOutcome:
    """Fetch, validate and atomically save one cover. Never raises for network or content trouble."""
    outcome = CoverOutcome(url=book_url, cover_url=cover_url)
    fetched = client.get(cover_url)
    outcome.status = fetched.status or ""
    if not fetched.ok:
        outcome.reason, outcome.detail = fetched.reason, f"{fetched.detail} ({cover_url})"
        return outcome
    if len(fetched.content) > MAX_IMAGE_BYTES:
        outcome.reason, outcome.detail = "too_large", f"{len(fetched.content)} bytes ({cover_url})"
        return outcome
    kind, reason, detail = check_image(fetched.content, fetched.content_type)
    if reason:
        outcome.reason, outcome.detail = reason, f"{detail} ({cover_url})"
        return outcome
    target = out_dir / f"{cover_stem(book_url)}.{kind}"
    with _WRITE_LOCK:
        write_bytes(target, fetched.content)            # atomic: a cover on disk is always a whole cover
    outcome.file, outcome.content_type, outcome.size = target.name, fetched.content_type, len(fetched.content)
    return outcome


# ---------------------------------------------------------------- the command
def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m scraper.covers",
                                description="Download book covers named in a details CSV (cover_url column).")
    parser.add_argument("--details", type=Path, default=config.RAW_DIR / "smashwords_details.csv",
                        help="details CSV with url and cover_url columns (default data/raw/smashwords_details.csv)")
    parser.add_argument("--out", type=Path, default=config.RAW_DIR / "smashwords_covers",
                        help="folder for the images, covers.csv and covers.errors.csv "
                             "(default data/raw/smashwords_covers/)")
    cli.add_workers_option(parser, "download")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also retry covers whose earlier error was permanent (404, corrupt, ...)")
    cli.add_client_options(parser)
    return parser


def read_cover_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise cli.UsageError(f"--details {path} does not exist (run python -m scraper.details_scraper first)")
    if path.is_dir():
        raise cli.UsageError(f"--details {path} is a folder, not a file")
    columns, rows = read_csv_dicts(path, "--details")
    missing = {"url", "cover_url"} - set(columns)
    if missing:
        raise cli.UsageError(f"--details {path} has no {', '.join(sorted(missing))} column (columns: {columns})")
    for row in rows:
        strip_row_urls(row)              # credentials in a URL are never sent or stored
    return rows


def remove_leftovers(out_dir: Path) -> None:
    """Delete the temporary files of interrupted earlier runs: staging files of processes that are gone (the check
    is deployment.files.clean_stale's), and the `.part<thread>` files of older versions; nothing else."""
    for path in list(out_dir.iterdir()):
        staging = _STAGING_NAME.fullmatch(path.name)
        if staging:
            clean_stale(out_dir / staging.group(1))
        elif path.is_file() and _OLD_PARTIAL_NAME.fullmatch(path.name):
            path.unlink()


def existing_cover(out_dir: Path, book_url: str) -> Path | None:
    stem = cover_stem(book_url)
    for ext in IMAGE_KINDS:
        if (out_dir / f"{stem}.{ext}").exists():
            return out_dir / f"{stem}.{ext}"
    return None


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    return cli.run_locked(parser.prog, out_dir / "covers.lock", out_dir, lambda: _run(parser, args, out_dir))


def _run(parser: cli.ArgumentParser, args, out_dir: Path) -> int:
    try:
        rows = read_cover_rows(args.details)
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest_path, errors_file = out_dir / "covers.csv", out_dir / "covers.errors.csv"
        manifest = repair_and_read(manifest_path, MANIFEST_COLUMNS)
        earlier_errors = repair_and_read(errors_file, ERROR_COLUMNS)
        settings = CoverSettings(details=str(args.details), out=str(out_dir), workers=args.workers,
                                 retry_errors=args.retry_errors, delay=args.delay, timeout=args.timeout,
                                 deadline=args.deadline, retries=args.retries, max_redirects=args.max_redirects,
                                 user_agent=args.user_agent, ignore_robots=args.ignore_robots)
        cli.save_settings(settings, out_dir / "covers.settings.json", "scraper.covers")
        remove_leftovers(out_dir)                        # a kill -9 mid-write leaves these; they are never covers
        manifest_out = CsvAppender(manifest_path, MANIFEST_COLUMNS)
        errors_out = CsvAppender(errors_file, ERROR_COLUMNS)
    except (cli.UsageError, ValueError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return cli.EXIT_BAD_INPUT

    summary = cli.Summary(stage="covers", rows_before=len(manifest))
    in_manifest = {row["url"] for row in manifest}
    failed_before = {row["url"] for row in earlier_errors if not args.retry_errors and not is_transient(row["reason"])}
    todo, queued = [], set()
    for row in rows:
        book_url, cover_url = (row.get("url") or "").strip(), (row.get("cover_url") or "").strip()
        if not book_url or book_url in queued:
            continue
        queued.add(book_url)
        if not cover_url:
            summary.error("no_cover_url")                 # nothing to fetch; not written to the errors file
            continue
        on_disk = existing_cover(out_dir, book_url)
        if on_disk is not None:
            if book_url not in in_manifest:               # killed between the rename and the manifest row
                manifest_out.write({"url": book_url, "cover_url": cover_url, "file": on_disk.name,
                                    "content_type": "", "bytes": on_disk.stat().st_size})
            summary.skipped += 1
            continue
        if book_url in failed_before:
            summary.skipped += 1
            continue
        todo.append((book_url, cover_url))

    client = cli.make_client(args, pool_size=max(10, args.workers))
    bar = cli.progress(len(todo), "covers", args.no_progress)
    stop = threading.Event()

    def work(item: tuple[str, str]) -> CoverOutcome | None:
        if stop.is_set():
            return None
        book_url, cover_url = item
        try:
            cli.check_url(cover_url, "cover_url")
        except cli.UsageError as exc:
            return CoverOutcome(url=book_url, cover_url=cover_url, reason="bad_url", detail=str(exc))
        return download_cover(client, book_url, cover_url, out_dir)

    def record(outcome: CoverOutcome | None) -> None:
        if outcome is None:
            return
        summary.pages += 1
        if outcome.reason:
            summary.error(outcome.reason)
            errors_out.write({"url": outcome.url, "status": outcome.status, "reason": outcome.reason,
                              "detail": outcome.detail})
        else:
            summary.rows += 1
            manifest_out.write({"url": outcome.url, "cover_url": outcome.cover_url, "file": outcome.file,
                                "content_type": outcome.content_type, "bytes": outcome.size})
        bar.update(1)
        bar.set_postfix(saved=summary.rows, errors=sum(summary.errors.values()), refresh=False)

    return cli.pool_and_report(todo, work, record, args.workers, stop, bar, (manifest_out, errors_out), summary, client)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
