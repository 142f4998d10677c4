"""Cover-colour labels from the cover images: description → the colours its cover really has.

    python -m training.cover_hues --details data/raw/smashwords_details.csv --covers data/raw/smashwords_covers/ \\
        --out data/raw/smashwords_hues.csv [--min-share 0.1] [--palette basic]
    python -m training.cover_hues --details data/sample/books.csv --covers data/sample/ --out data/raw/sample_hues.csv
    python -m training.prepare --input data/raw/smashwords_hues.csv      # then train / compress as for genres

For every book of `--details` that `--covers`/covers.csv (the `python -m scraper.covers` manifest) maps to an
image file:
  1. read the image as sRGB (embedded ICC profiles converted, palette/grey/16-bit modes expanded), shrink it to
     at most `--size` pixels on its longest side with a box filter (averages away JPEG noise and halftone),
     and drop transparent pixels (alpha < 128): they are no part of what a reader sees;
  2. quantise the pixels with k-means in CIELAB (`--clusters` centres, k-means++ seeding from `--seed`,
     weighted by how many pixels share a colour), because Lab distances follow perceived differences and RGB
     means do not (the mean of a red and a green half is a muddy olive nobody sees on the cover);
  3. name each cluster by the nearest colour of the palette (CIEDE2000 by default; `training/palette.py`)
     and add up the pixel shares per name;
  4. keep as labels the names covering at least `--min-share` of the cover, largest first; a cover where no
     name reaches it (a busy photograph) keeps its single largest colour, so every cover has a label.

Why --min-share 0.10 by default: a label should be a colour a person glancing at the cover would name. Title
lettering covers 1-4% of a cover (0.8-3.6%, median 2.1% on the sample covers), thin frames and anti-aliased
edges less, so at 0.10 they never become labels, while a second background, a band or a large figure does.
On the sample covers 0.10 gives 2-5 colours per book (mean 2.8; 0.05 → 3.3, 0.15 → 2.3, 0.20 → 2.0), close to
the 2.2 genres per book of the genre data. At 0.05 busy covers collect every accent; from 0.20 up most covers
keep one or two colours and the secondary colour — often the one that carries the mood — is lost.

Writes:
  --out                         url,title,text,labels (JSON list of colour names) + cover_file, shares (JSON
                                {name: share of the cover}, largest first) and genres (the details' labels), so
                                `training.prepare` and every later stage read it like a details CSV
  <out stem>_types_encoded.json {"colour": index} over the whole palette, the seeds' label-file format
  palette.json                  {"colour": "#rrggbb"} beside --out; compression finds it through the prepared
                                data set and marks the bundle `label_display: "colors"`
  <out stem>.errors.csv         url,cover_file,reason,detail for every cover that could not be read
  <out stem>.settings.json      the settings and the command
Bad input (missing files or columns, unknown palette) exits with code 2 and one line on stderr.

Over 400 lines: one stage with its CLI, image reading, the CIELAB k-means and the labelling rule, which only this
stage uses; the colour names and the CIEDE2000 distance live in `training/palette.py`.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import config
from deployment.files import write_text
from training.palette import PaletteError, get_palette, nearest_names, rgb_to_hex, srgb_to_lab

EXIT_BAD_INPUT = 2
DETAILS_COLUMNS = ("url", "title", "text")            # required; `labels` (genres) is optional
MANIFEST_COLUMNS = ("url", "file")                    # the part of scraper.covers' covers.csv we need
OUT_COLUMNS = ("url", "title", "text", "labels", "cover_file", "shares", "genres")
ERROR_COLUMNS = ("url", "cover_file", "reason", "detail")
ALPHA_CUTOFF = 128                                    # pixels less opaque than this are not part of the cover
MAX_PIXELS = 80_000_000                               # refuse decompression bombs instead of eating the RAM
SHARE_DECIMALS = 4


@dataclass
class HueSettings:
    details: str = str(config.RAW_DIR / "smashwords_details.csv")   # url,title,text[,labels] CSV
    covers: str = str(config.RAW_DIR / "smashwords_covers")         # folder with covers.csv + the images
    out: str = str(config.RAW_DIR / "smashwords_hues.csv")          # labelled CSV for training.prepare
    min_share: float = 0.10          # a colour must cover this share of the cover to be a label
    palette: str = "basic"           # built-in palette name or a JSON file {"name": "#rrggbb"}
    clusters: int = 8                # k-means centres per cover (more than the colours a cover shows)
    size: int = 96                   # longest side, in pixels, the cover is shrunk to before clustering
    metric: str = "ciede2000"        # cluster → name distance: ciede2000 or cie76
    seed: int = 0                    # k-means++ seeding; the same seed gives the same labels


class HueError(Exception):
    """A cover that cannot be used; `reason` is a short code for the errors CSV, the message the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class CoverHues:
    shares: dict[str, float]                               # palette name → share of the cover, largest first
    labels: list[str]                                      # names with share >= min_share (at least one)
    clusters: list[tuple[str, float]] = field(default_factory=list)   # (centre hex, share), largest first


# ---------------------------------------------------------------- reading pixels
def _to_srgb(img):
    """An RGB or RGBA image in sRGB, whatever the file's mode and colour profile."""
    from PIL import Image, ImageCms

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):      # 16-bit / float greys: scale, don't clip
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    target = "RGBA" if has_alpha else "RGB"
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:                                                           # Adobe RGB / CMYK covers look right
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=target)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass                                                       # a broken profile: read the numbers as sRGB
    return img.convert(target)


def load_pixels(path: str | Path, size: int = 96) -> np.ndarray:
    """The cover's visible pixels as sRGB uint8, shape (n, 3), after shrinking to `size` on the longest side."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise HueError("missing_file", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise HueError("empty_file", f"{path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise HueError("too_large", f"{img.width}x{img.height} pixels is more than {MAX_PIXELS:,}")
                if img.format == "JPEG":
                    img.draft(img.mode, (size * 2, size * 2))      # decode at 1/2..1/8 scale: much faster
                img.load()
                rgb = _to_srgb(img)
    except HueError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise HueError("too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise HueError("not_an_image", f"{path.name}: Pillow cannot identify the image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:   # truncated/corrupt data raise these in Pillow
        raise HueError("corrupt_image", f"{path.name}: {exc}") from exc
    scale = size / max(rgb.width, rgb.height)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
                         Image.Resampling.BOX)
    arr = np.asarray(rgb, dtype=np.uint8).reshape(-1, len(rgb.mode))
    if arr.shape[1] == 4:
        arr = arr[arr[:, 3] >= ALPHA_CUTOFF, :3]
        if len(arr) == 0:
            raise HueError("transparent", f"{path.name}: every pixel is transparent")
    return arr


# ---------------------------------------------------------------- quantisation
def _kmeans_pp(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding, weighted: each new centre drawn with probability ∝ weight × squared distance."""
    centres = [points[rng.choice(len(points), p=weights / weights.sum())]]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = weights * d2
        if p.sum() <= 0:                                       # fewer distinct colours than k
            break
        centres.append(points[rng.choice(len(points), p=p / p.sum())])
        d2 = np.minimum(d2, ((points - centres[-1]) ** 2).sum(1))
    return np.array(centres)


def kmeans_lab(lab: np.ndarray, weights: np.ndarray, k: int, seed: int = 0, n_init: int = 3,
               max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means (Lloyd) on Lab points: (centres (m, 3), shares (m,) summing to 1), largest share first.

    Returns fewer than k centres when the points have fewer distinct colours, or when clusters empty out.
    The best of `n_init` seedings (lowest weighted inertia) wins; everything derives from `seed`.
    """
    lab, weights = np.asarray(lab, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if len(lab) <= k:                                          # every distinct colour is its own cluster
        order = np.argsort(-weights, kind="stable")
        return lab[order], weights[order] / total
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        centres = _kmeans_pp(lab, weights, k, rng)
        assign = None
        for _ in range(max_iter):
            d2 = ((lab[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            new = d2.argmin(1)
            if assign is not None and np.array_equal(new, assign):
                break
            assign = new
            mass = np.bincount(assign, weights=weights, minlength=len(centres))
            keep = mass > 0
            sums = np.stack([np.bincount(assign, weights=weights * lab[:, j], minlength=len(centres))
                             for j in range(3)], axis=1)
            centres = sums[keep] / mass[keep, None]
            if not keep.all():
                assign = None                                  # indices shifted: reassign next round
        d2 = ((lab[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        assign = d2.argmin(1)
        inertia = float((weights * d2[np.arange(len(lab)), assign]).sum())
        if best is None or inertia < best[0] - 1e-9:
            best = (inertia, centres, np.bincount(assign, weights=weights, minlength=len(centres)))
    _, centres, mass = best
    order = np.argsort(-mass, kind="stable")
    keep = mass[order] > 0
    return centres[order][keep], mass[order][keep] / total


def dominant_colours(pixels: np.ndarray, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lab centres and pixel shares of a cover's k dominant colours. Pixels: sRGB uint8 (n, 3)."""
    packed = (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8) | pixels[:, 2]
    uniq, counts = np.unique(packed, return_counts=True)       # flat covers: a few dozen colours, not 9,000 pixels
    rgb = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    return kmeans_lab(srgb_to_lab(rgb), counts.astype(np.float64), k, seed)


def lab_to_srgb_hex(lab: np.ndarray) -> str:
    """The sRGB hex of a Lab colour (for showing a cluster centre; clipped to the sRGB gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    eps, kappa = 216 / 24389, 24389 / 27
    xyz = np.where(f ** 3 > eps, f ** 3, (116 * f - 16) / kappa) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                  [0.0556434, -0.2040259, 1.0572252]])
    lin = np.clip(m @ xyz, 0, 1)
    c = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return rgb_to_hex(c * 255)


def name_shares(centres: np.ndarray, shares: np.ndarray, palette: dict[str, str],
                metric: str = "ciede2000") -> dict[str, float]:
    """Cluster shares added up per nearest palette name, largest first (ties by palette order)."""
    names, _ = nearest_names(centres, palette, metric)
    total: dict[str, float] = {}
    for name, share in zip(names, shares):
        total[name] = total.get(name, 0.0) + float(share)
    order = list(palette)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], order.index(kv[0]))))


def choose_labels(shares: dict[str, float], min_share: float) -> list[str]:
    """Names covering at least `min_share`, largest first; the largest alone when none does."""
    labels = [name for name, share in shares.items() if share >= min_share - 1e-12]
    return labels or list(shares)[:1]


def cover_hues(path: str | Path, palette: dict[str, str], settings: HueSettings | None = None) -> CoverHues:
    """Everything for one cover file: named shares, labels and cluster centres. Raises HueError."""
    s = settings or HueSettings()
    pixels = load_pixels(path, s.size)
    centres, shares = dominant_colours(pixels, s.clusters, s.seed)
    named = name_shares(centres, shares, palette, s.metric)
    return CoverHues(shares=named, labels=choose_labels(named, s.min_share),
                     clusters=[(lab_to_srgb_hex(c), float(w)) for c, w in zip(centres, shares)])


# ---------------------------------------------------------------- inputs
def _read_csv(path: Path, required: tuple[str, ...], option: str, hint: str) -> list[dict]:
    if not path.is_file():
        raise HueError("usage", f"{option} {path} does not exist{hint}")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise HueError("usage", f"{option} {path} has no {', '.join(missing)} column "
                                        f"(columns: {', '.join(columns) or 'none'})")
            return list(reader)
    except UnicodeDecodeError as exc:
        raise HueError("usage", f"{option} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise HueError("usage", f"{option} {path} is not a readable CSV ({exc})") from exc


def read_inputs(s: HueSettings) -> tuple[list[dict], dict[str, str], Path]:
    """(details rows, book url → cover file name, covers folder); HueError('usage', ...) on bad input."""
    details = _read_csv(Path(s.details), DETAILS_COLUMNS, "--details",
                        " (run python -m scraper.details_scraper first)")
    covers = Path(s.covers)
    if not covers.is_dir():
        raise HueError("usage", f"--covers {covers} is not a folder (run python -m scraper.covers first)")
    manifest = _read_csv(covers / "covers.csv", MANIFEST_COLUMNS, "--covers",
                         " (the folder needs the covers.csv that python -m scraper.covers writes)")
    files: dict[str, str] = {}
    for row in manifest:
        url, name = (row.get("url") or "").strip(), (row.get("file") or "").strip()
        if url and name and url not in files:
            files[url] = name
    return details, files, covers


def cover_path(covers_dir: Path, name: str) -> Path:
    """The image a covers.csv `file` names: relative to the covers folder and never outside it."""
    path = (covers_dir / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(covers_dir.resolve()):
        raise HueError("bad_file_name", f"{name!r} points outside the covers folder {covers_dir}")
    return path


def _genres(cell: str | None) -> str:
    """The details' labels cell, kept as a JSON list under `genres` (never eval'd; bad cells become [])."""
    try:
        value = json.loads(cell) if cell else []
    except json.JSONDecodeError:
        return "[]"
    return json.dumps(value if isinstance(value, list) else [], ensure_ascii=False)


# ---------------------------------------------------------------- outputs
def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def frequency_table(counts: Counter, n_books: int, palette: dict[str, str]) -> str:
    """Label frequencies as a text table with a bar per colour, most frequent first."""
    if not counts:
        return "(no labels)"
    width = max(len(n) for n in counts)
    top = max(counts.values())
    lines = [f"{'colour':<{width}}  {'hex':<7}  {'books':>5}  {'share':>6}"]
    for name, n in counts.most_common():
        bar = "#" * max(1, round(30 * n / top))
        lines.append(f"{name:<{width}}  {palette.get(name, ''):<7}  {n:>5}  {n / n_books:>6.1%}  {bar}")
    return "\n".join(lines)


def plot_frequencies(counts: Counter, n_books: int, palette: dict[str, str], path: Path) -> None:
    """A bar chart of label frequencies, each bar in its own colour (the text table, drawn)."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: never switches a caller's (a notebook's) backend

    names = [n for n, _ in counts.most_common()]
    fig = Figure(figsize=(7, 0.28 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names[::-1], [counts[n] / n_books for n in names[::-1]],
            color=[palette[n] for n in names[::-1]], edgecolor="#444444", linewidth=0.6)
    ax.set_xlabel("share of covers with the colour as a label")
    ax.set_title(f"{path.stem.replace('_label_frequencies', '')}: cover colours on {n_books} books")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------- the command
def run(s: HueSettings, progress: bool = True, plot: bool = True, command: str = "") -> dict:
    """Label every cover and write the outputs; returns the summary. Raises HueError('usage', ...)."""
    started = time.perf_counter()
    palette = get_palette(s.palette)
    details, files, covers_dir = read_inputs(s)
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    rows, errors, seen = [], [], set()
    todo = []
    for row in details:
        url = (row.get("url") or "").strip()
        if url and url not in seen:
            seen.add(url)
            todo.append(row)
    with_cover = [row for row in todo if row["url"].strip() in files]
    for row in tqdm(with_cover, desc="covers", unit="cover", disable=not progress, dynamic_ncols=True,
                    file=sys.stderr):
        url = row["url"].strip()
        name = files[url]
        try:
            hues = cover_hues(cover_path(covers_dir, name), palette, s)
        except HueError as exc:
            errors.append({"url": url, "cover_file": name, "reason": exc.reason, "detail": str(exc)})
            continue
        rows.append({"url": url, "title": row.get("title", ""), "text": row.get("text", ""),
                     "labels": json.dumps(hues.labels, ensure_ascii=False), "cover_file": name,
                     "shares": json.dumps({k: round(v, SHARE_DECIMALS) for k, v in hues.shares.items()
                                           if round(v, SHARE_DECIMALS) > 0}),
                     "genres": _genres(row.get("labels"))})

    counts = Counter(label for r in rows for label in json.loads(r["labels"]))
    per_book = [len(json.loads(r["labels"])) for r in rows]
    stem = out.stem
    write_text(out, _csv_text(OUT_COLUMNS, rows))
    write_text(out.with_name(f"{stem}.errors.csv"), _csv_text(ERROR_COLUMNS, errors))
    write_text(out.with_name(f"{stem}_types_encoded.json"),
                  json.dumps({name: i for i, name in enumerate(palette)}, indent=1, ensure_ascii=False) + "\n")
    write_text(out.with_name("palette.json"), json.dumps(palette, indent=1, ensure_ascii=False) + "\n")
    write_text(out.with_name(f"{stem}.settings.json"),
                  json.dumps({**asdict(s), "command": command}, indent=2) + "\n")
    if plot and rows:
        plot_frequencies(counts, len(rows), palette, out.with_name(f"{stem}_label_frequencies.png"))
    return {
        "books": len(todo), "with_cover": len(with_cover), "no_cover": len(todo) - len(with_cover),
        "covers_read": len(rows), "unreadable": len(errors),
        "errors_by_reason": dict(Counter(e["reason"] for e in errors).most_common()),
        "labels_per_book": {"mean": round(float(np.mean(per_book)), 2) if per_book else 0.0,
                            "min": min(per_book, default=0), "max": max(per_book, default=0),
                            "histogram": {str(k): v for k, v in sorted(Counter(per_book).items())}},
        "label_frequencies": dict(counts.most_common()),
        "elapsed_s": round(time.perf_counter() - started, 2),
        "out": str(out),
    }


def parse_args(argv: list[str] | None = None) -> tuple[HueSettings, argparse.Namespace]:
    d = HueSettings()
    p = argparse.ArgumentParser(prog="python -m training.cover_hues",
                                description="Label books with the named colours their covers really have.")
    p.add_argument("--details", default=d.details, help="details CSV with url,title,text[,labels] (default %(default)s)")
    p.add_argument("--covers", default=d.covers,
                   help="folder with the images and scraper.covers' covers.csv (url → file) (default %(default)s)")
    p.add_argument("--out", default=d.out, help="labelled CSV to write; the label/palette/errors files go beside it "
                                                "(default %(default)s)")
    p.add_argument("--min-share", type=float, default=d.min_share, metavar="F",
                   help="keep a colour as a label when it covers at least this share of the cover (default %(default)s)")
    p.add_argument("--palette", default=d.palette,
                   help="named colours: 'basic' (27 names), 'basic11' (Berlin & Kay's 11) or a JSON file "
                        "{\"name\": \"#rrggbb\"} (default %(default)s)")
    p.add_argument("--clusters", type=int, default=d.clusters, help="k-means colours per cover (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size,
                   help="longest side in pixels the cover is shrunk to before clustering (default %(default)s)")
    p.add_argument("--metric", choices=("ciede2000", "cie76"), default=d.metric,
                   help="colour difference used to name clusters (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="k-means++ seed (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="skip the label-frequency chart")
    args = p.parse_args(argv)
    s = HueSettings(details=args.details, covers=args.covers, out=args.out, min_share=args.min_share,
                    palette=args.palette, clusters=args.clusters, size=args.size, metric=args.metric, seed=args.seed)
    if not 0 < s.min_share <= 1:
        p.error(f"--min-share must lie in (0, 1], got {s.min_share}")
    if s.clusters < 1 or s.size < 1:
        p.error("--clusters and --size must be positive")
    return s, args


def main(argv: list[str] | None = None) -> int:
    s, args = parse_args(argv)
    prog = "python -m training.cover_hues"
    command = " ".join([prog] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)])
    print(f"settings: {json.dumps(asdict(s))}", file=sys.stderr, flush=True)
    try:
        summary = run(s, progress=not args.no_progress, plot=not args.no_plot, command=command)
    except PaletteError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except HueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    palette = get_palette(s.palette)
    counts = Counter(summary["label_frequencies"])
    if counts:
        print(frequency_table(counts, summary["covers_read"], palette))
    lpb = summary["labels_per_book"]
    errs = ", ".join(f"{k}: {v}" for k, v in summary["errors_by_reason"].items())
    print(f"cover hues: {summary['books']} books, {summary['with_cover']} with a cover, {summary['covers_read']} read, "
          f"{summary['unreadable']} unreadable{f' ({errs})' if errs else ''}; "
          f"{lpb['mean']} labels/book ({lpb['min']}-{lpb['max']}), {len(counts)} colours used "
          f"-> {summary['out']} in {summary['elapsed_s']}s", flush=True)
    return 0 if summary["with_cover"] == 0 or summary["covers_read"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
