"""Draw original cover images for some of the sample books, so the cover-hue step has real pixels to read.

    python scripts/draw_sample_covers.py                  # writes data/sample/covers/*.png + data/sample/covers.csv
    python scripts/draw_sample_covers.py --per-genre 4 --seed 7 --out-dir /tmp/covers --manifest /tmp/covers.csv

Takes up to `--per-genre` books per first-listed genre from data/sample/books.csv (the descriptions the project
wrote itself), in file order, and draws each a 160×240 cover with Pillow: flat areas, gradients, simple shapes
(suns, moons, hills, waves, stripes, frames, soft blots) and the title. The colours come from a small mood
palette per genre (horror dark with blood reds, romance pinks and cream, science fiction night blues with neon,
…), mixed across a book's genres and jittered, so the covers are plausible for their books without being
painted in the exact hex values the hue step names. Everything derives from `--seed` and the book id: the same
command gives the same files on the same Pillow.

covers.csv has the columns of `python -m scraper.covers`' manifest (url,cover_url,file,content_type,bytes);
`file` is relative to the manifest's folder (`covers/100001.png`) and `cover_url` is empty, as nothing was
downloaded. Use it with `python -m training.cover_hues --details data/sample/books.csv --covers data/sample/`.
"""
from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
import random
import re
import sys
import textwrap
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import config  # noqa: E402

W, H = 160, 240                                 # cover size: the 2:3 of most e-book covers, small for git
MANIFEST_COLUMNS = ("url", "cover_url", "file", "content_type", "bytes")

MOODS = {   # genre → colours a designer might reach for (sRGB hex; deliberately not the palette's own values)
    "Fantasy": ["#4b1d6e", "#d4a017", "#1f4d2b", "#141a3c", "#1b6f6a"],
    "Romance": ["#f29bb5", "#f7c6a3", "#c8102e", "#fbf3e4", "#c9a7e0"],
    "Mystery": ["#1b2a49", "#8e959b", "#121212", "#e8c547", "#5e1224"],
    "Crime": ["#101010", "#b3001b", "#3a3a3a", "#f4f4f0", "#f2d200"],
    "Thriller": ["#0d0d0d", "#d7261e", "#3c4248", "#f26b1d", "#e9e9e9"],
    "Science Fiction": ["#0b1a3a", "#050505", "#17c3b2", "#c2187a", "#1f5fe0"],
    "Horror": ["#080808", "#5a0a14", "#cc1122", "#3b4d1a", "#7d7d7d"],
    "Paranormal": ["#5a2d82", "#0c0c12", "#1d7874", "#c9cdd1", "#f5f3ea"],
    "Dystopian": ["#8b8f8c", "#333535", "#e2661a", "#6e3410", "#0a0a0a"],
    "Adventure": ["#5fa8e8", "#f28c28", "#2e8b3a", "#d8b574", "#6b3a0e"],
    "Literary Fiction": ["#f6f2e8", "#e8dcc0", "#9a9d98", "#6b6f2a", "#9bbbd4"],
    "Historical Fiction": ["#6b4226", "#cfae6e", "#e6dab0", "#611a28", "#c9a227"],
    "Young Adult": ["#14c6b5", "#ff5fa2", "#ffe84a", "#ff8a1e", "#c6a0f0"],
    "Humor": ["#ffe11a", "#ff8c00", "#a6e22e", "#1e5bd6", "#ff86c2"],
    "Children's Books": ["#ffe55c", "#9fd3f7", "#4cbb17", "#e8282b", "#ff9a2e"],
    "Biography": ["#fcfcfa", "#d6d9d4", "#151515", "#0f1f45", "#cdb27a"],
    "Travel": ["#14b3a4", "#8ccaf7", "#e9dcaa", "#f57f20", "#2f9e3a"],
    "Cooking": ["#fdfdfb", "#d9261c", "#7cc242", "#ffd23f", "#6a3b12"],
    "Self-Help": ["#fafafa", "#0f8f83", "#ffe14d", "#90c8f5", "#ffb07a"],
    "Business": ["#fbfbfb", "#0c1d4a", "#1f56d8", "#8f9290", "#f47a12"],
}
FALLBACK_MOOD = ["#f4f1ea", "#1b2a49", "#b3001b", "#d4a017", "#2e8b3a"]
TITLE_INKS = ["#ffffff", "#101010", "#f6e7b0", "#d4a017"]    # title lettering: whichever contrasts most


# ---------------------------------------------------------------- colour helpers
def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def jitter(colour: tuple[int, int, int], rng: random.Random, amount: float = 0.05) -> tuple[int, int, int]:
    """The colour with its lightness and saturation nudged a little: a printer's shade, not a hex constant."""
    h, l, s = colorsys.rgb_to_hls(*(c / 255 for c in colour))
    l = min(1.0, max(0.0, l + rng.uniform(-amount, amount)))
    s = min(1.0, max(0.0, s + rng.uniform(-amount, amount)))
    return tuple(int(round(c * 255)) for c in colorsys.hls_to_rgb(h, l, s))


def luminance(colour: tuple[int, int, int]) -> float:
    lin = [(c / 255 / 12.92) if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def book_colours(genres: list[str], rng: random.Random) -> list[tuple[int, int, int]]:
    """Up to four distinct mood colours: two from the first genre, the rest from the book's other genres."""
    first = list(MOODS.get(genres[0], FALLBACK_MOOD)) if genres else list(FALLBACK_MOOD)
    rng.shuffle(first)
    picked = first[:2]
    others = [c for g in genres[1:] for c in MOODS.get(g, [])] or first[2:]
    rng.shuffle(others)
    for c in others + first[2:]:
        if c not in picked:
            picked.append(c)
        if len(picked) == 4:
            break
    return [jitter(rgb(c), rng) for c in picked]


# ---------------------------------------------------------------- drawing
def vertical_gradient(top, bottom, height: int = H):
    from PIL import Image

    img = Image.new("RGB", (W, height))
    px = img.load()
    for y in range(height):
        c = mix(top, bottom, y / max(1, height - 1))
        for x in range(W):
            px[x, y] = c
    return img


def layout_band(img, draw, cols, rng):
    top = rng.randint(90, 130)
    draw.rectangle([0, top, W, top + rng.randint(50, 80)], fill=cols[1])
    draw.rectangle([0, top - 4, W, top - 1], fill=cols[2])
    return (top + 10) / H


def layout_sun(img, draw, cols, rng):
    img.paste(vertical_gradient(cols[0], cols[1]))
    r = rng.randint(22, 40)
    cx, cy = rng.randint(40, 120), rng.randint(60, 110)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=cols[2])
    return 0.70


def layout_hills(img, draw, cols, rng):
    img.paste(vertical_gradient(cols[0], mix(cols[0], (255, 255, 255), 0.25)))
    for k, colour in enumerate(cols[1:3]):
        base = rng.randint(150, 175) + 30 * k
        pts = [(0, H)] + [(x, base - rng.randint(0, 45)) for x in range(0, W + 20, 20)] + [(W, H)]
        draw.polygon(pts, fill=colour)
    return 0.06


def layout_waves(img, draw, cols, rng):
    img.paste(vertical_gradient(cols[0], cols[1]))
    for k in range(3):
        y0 = 150 + 25 * k + rng.randint(-5, 5)
        colour = cols[2] if k % 2 == 0 else mix(cols[2], cols[1], 0.5)
        pts = [(0, H)] + [(x, y0 + (8 if (x // 20) % 2 else -8)) for x in range(0, W + 20, 20)] + [(W, H)]
        draw.polygon(pts, fill=colour)
    return 0.10


def layout_split(img, draw, cols, rng):
    cut = rng.randint(60, 180)
    draw.polygon([(0, 0), (W, 0), (W, cut - 50), (0, cut + 50)], fill=cols[1])
    draw.rectangle([6, 6, W - 7, H - 7], outline=cols[2], width=3)
    return 0.72


def layout_stripes(img, draw, cols, rng):
    x = rng.randint(0, 30)
    while x < W:
        w = rng.randint(10, 28)
        draw.rectangle([x, 0, x + w, H], fill=cols[1 + (x // 7) % (len(cols) - 1)])
        x += w + rng.randint(14, 36)
    draw.rectangle([0, 150, W, 210], fill=cols[0])
    return 0.64


def layout_frame(img, draw, cols, rng):
    m = rng.randint(12, 22)
    draw.rectangle([m, m, W - m, H - m], fill=cols[1])
    draw.rectangle([m + 6, m + 6, W - m - 6, H - m - 6], outline=cols[2], width=2)
    cy = rng.randint(135, 165)
    draw.regular_polygon((W // 2, cy, rng.randint(16, 26)), n_sides=rng.choice([3, 4, 6]), fill=cols[2])
    return 0.12


def layout_blots(img, draw, cols, rng):
    from PIL import Image, ImageDraw, ImageFilter

    layer = Image.new("RGB", (W, H), cols[0])
    blot = ImageDraw.Draw(layer)
    for k in range(rng.randint(4, 7)):
        r = rng.randint(25, 60)
        cx, cy = rng.randint(0, W), rng.randint(0, H)
        blot.ellipse([cx - r, cy - int(r * 1.3), cx + r, cy + int(r * 1.3)], fill=cols[1 + k % (len(cols) - 1)])
    img.paste(layer.filter(ImageFilter.GaussianBlur(rng.uniform(3, 7))))
    return rng.choice([0.08, 0.70])


LAYOUTS = [layout_band, layout_sun, layout_hills, layout_waves, layout_split, layout_stripes, layout_frame,
           layout_blots]


def draw_title(img, draw, title: str, at: float, rng: random.Random) -> None:
    """The title, centred, in the ink that contrasts most with what lies under it, kept inside the cover."""
    from PIL import ImageFont

    # Pillow's built-in font has no accented letters: fold them ("Café" → "Cafe") rather than draw boxes
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    size = rng.choice([15, 16, 18])
    lines = textwrap.wrap(title, width=15)
    if len(lines) > 3:
        size, lines = 13, textwrap.wrap(title, width=19)
    font = ImageFont.load_default(size=size)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 1
    lines = lines[:4]
    y = max(6, min(int(at * H), H - line_h * len(lines) - 10))
    region = img.crop((10, y, W - 10, y + line_h * len(lines))).resize((1, 1)).getpixel((0, 0))
    ink = max((rgb(c) for c in TITLE_INKS), key=lambda c: contrast(c, region))
    for line in lines:
        draw.text(((W - draw.textlength(line, font=font)) / 2, y), line, font=font, fill=ink)
        y += line_h


def draw_cover(title: str, genres: list[str], seed: int):
    """One cover as a Pillow RGB image: background, a layout of shapes, the title."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    cols = book_colours(genres, rng)
    while len(cols) < 4:
        cols.append(jitter(cols[-1], rng, 0.2))
    img = Image.new("RGB", (W, H), cols[0])
    draw = ImageDraw.Draw(img)
    layout = LAYOUTS[rng.randrange(len(LAYOUTS))]
    at = layout(img, draw, cols, rng)
    draw = ImageDraw.Draw(img)                    # layouts may paste a new background
    draw_title(img, draw, title, at, rng)
    return img


# ---------------------------------------------------------------- selection and output
def book_id(url: str) -> str:
    match = re.search(r"/books/view/(\d+)", url)
    if not match:
        raise ValueError(f"{url}: not a /books/view/<id> URL")
    return match.group(1)


def select_books(rows: list[dict], per_genre: int) -> list[dict]:
    """Up to `per_genre` books for each first-listed genre, in file order: every genre gets covers."""
    taken: dict[str, int] = {}
    chosen = []
    for row in rows:
        genres = json.loads(row["labels"])
        key = genres[0] if genres else ""
        if taken.get(key, 0) < per_genre:
            taken[key] = taken.get(key, 0) + 1
            chosen.append(row)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Draw sample cover images for data/sample/books.csv.")
    p.add_argument("--books", type=Path, default=config.SAMPLE_DIR / "books.csv", help="url,title,text,labels CSV")
    p.add_argument("--out-dir", type=Path, default=config.SAMPLE_DIR / "covers", help="folder for the PNG files")
    p.add_argument("--manifest", type=Path, default=config.SAMPLE_DIR / "covers.csv",
                   help="covers.csv to write (url → file relative to its folder)")
    p.add_argument("--per-genre", type=int, default=4, help="books per first-listed genre (default 4 → ≤80 covers)")
    p.add_argument("--seed", type=int, default=7, help="base seed; each cover uses seed + book id (default 7)")
    args = p.parse_args(argv)

    with open(args.books, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    chosen = select_books(rows, args.per_genre)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = args.manifest.resolve().parent
    manifest, total = [], 0
    for row in chosen:
        ident = book_id(row["url"])
        img = draw_cover(row["title"], json.loads(row["labels"]), seed=args.seed * 1_000_003 + int(ident))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        path = args.out_dir / f"{ident}.png"
        path.write_bytes(buf.getvalue())
        total += len(buf.getvalue())
        manifest.append({"url": row["url"], "cover_url": "", "file": path.resolve().relative_to(base).as_posix(),
                         "content_type": "image/png", "bytes": len(buf.getvalue())})
    with open(args.manifest, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(manifest)
    print(f"drew {len(manifest)} covers ({total / 1024:.0f} KiB) -> {args.out_dir}, manifest {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
