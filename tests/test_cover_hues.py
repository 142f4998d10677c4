"""Cover hues: colour science, k-means naming on images with known colour areas, odd and broken image files,
the command on the committed sample covers, and sample covers → prepare → tiny bundle → Flask swatches.
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training import cover_hues as ch
from training.palette import (BASIC, BASIC11_NAMES, PaletteError, delta_e_2000, delta_e_76, get_palette, hex_to_rgb,
                              palette_lab, srgb_to_lab)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
NAVY = hex_to_rgb(BASIC["navy"])


def three_band_cover(w: int = 100, h: int = 200) -> Image.Image:
    """60% pure red on top, 30% navy, 10% white at the bottom."""
    img = Image.new("RGB", (w, h), (255, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, int(0.6 * h), w, int(0.9 * h) - 1], fill=NAVY)
    draw.rectangle([0, int(0.9 * h), w, h], fill=(255, 255, 255))
    return img


def hues_of(img: Image.Image, tmp_path: Path, name: str = "cover.png", min_share: float = 0.1, **save) -> ch.CoverHues:
    path = tmp_path / name
    img.save(path, **save)
    return ch.cover_hues(path, BASIC, ch.HueSettings(min_share=min_share))


# ---------------------------------------------------------------- colour science
@pytest.mark.parametrize("rgb, lab", [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.24, 80.09, 67.20)),
    ((0, 255, 0), (87.73, -86.18, 83.18)),
    ((0, 0, 255), (32.30, 79.19, -107.86)),
    ((128, 128, 128), (53.59, 0.0, 0.0)),
    ((255, 255, 0), (97.14, -21.55, 94.48)),
])
def test_srgb_to_lab_matches_reference_values(rgb, lab):
    assert np.allclose(srgb_to_lab(rgb), lab, atol=0.01)


def test_lab_back_to_srgb_round_trips_every_palette_colour():
    for hex_colour in BASIC.values():
        assert ch.lab_to_srgb_hex(srgb_to_lab(hex_to_rgb(hex_colour))) == hex_colour


@pytest.mark.parametrize("lab1, lab2, expected", [   # Sharma, Wu & Dalal (2005), CIEDE2000 test data
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
])
def test_ciede2000_matches_published_pairs(lab1, lab2, expected):
    assert float(delta_e_2000(lab1, lab2)) == pytest.approx(expected, abs=1e-4)
    assert float(delta_e_2000(lab2, lab1)) == pytest.approx(expected, abs=1e-4)   # symmetric


def test_cie76_is_euclidean_in_lab():
    assert float(delta_e_76((50, 0, 0), (53, 4, 0))) == pytest.approx(5.0)


def test_palette_holds_the_eleven_basic_terms_and_no_two_names_are_near_twins():
    names, lab = palette_lab(BASIC)
    assert 16 <= len(names) <= 30 and set(BASIC11_NAMES) <= set(names)
    d = delta_e_2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    assert d.min() > 8.0                       # a cluster's name is not decided by a few units of noise
    assert list(get_palette("basic11")) == list(BASIC11_NAMES)


def test_palette_files_are_validated(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"Ink": "#111111", "Paper": "#FAFAFA"}))
    assert get_palette(good) == {"Ink": "#111111", "Paper": "#fafafa"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Ink": "black"}))
    with pytest.raises(PaletteError, match="#rrggbb"):
        get_palette(bad)
    with pytest.raises(PaletteError, match="neither a built-in"):
        get_palette("no-such-palette")


# ---------------------------------------------------------------- known colour areas
def test_sixty_red_thirty_navy_ten_white_give_those_names_and_shares(tmp_path):
    hues = hues_of(three_band_cover(), tmp_path)
    assert list(hues.shares)[:3] == ["red", "navy", "white"]
    for name, share in (("red", 0.6), ("navy", 0.3), ("white", 0.1)):
        assert hues.shares[name] == pytest.approx(share, abs=0.02)
    assert sum(hues.shares.values()) == pytest.approx(1.0)
    assert ch.choose_labels(hues.shares, 0.08) == ["red", "navy", "white"]
    assert hues_of(three_band_cover(), tmp_path, min_share=0.15).labels == ["red", "navy"]


def test_jpeg_artefacts_and_noise_do_not_change_the_labels(tmp_path):
    arr = np.asarray(three_band_cover(300, 450)).astype(int)
    noisy = np.clip(arr + np.random.default_rng(0).normal(0, 6, arr.shape), 0, 255).astype(np.uint8)
    hues = hues_of(Image.fromarray(noisy), tmp_path, "noisy.jpg", min_share=0.08, quality=70)
    assert hues.labels == ["red", "navy", "white"]
    assert hues.shares["red"] == pytest.approx(0.6, abs=0.03)


def test_red_and_green_halves_stay_red_and_green_not_their_muddy_rgb_mean(tmp_path):
    img = Image.new("RGB", (80, 120), hex_to_rgb(BASIC["red"]))
    ImageDraw.Draw(img).rectangle([40, 0, 80, 120], fill=hex_to_rgb(BASIC["green"]))
    hues = hues_of(img, tmp_path)
    assert hues.labels == ["red", "green"] and "olive" not in hues.shares and "brown" not in hues.shares


def test_every_palette_colour_slightly_off_is_named_as_itself(tmp_path):
    rng = np.random.default_rng(1)
    for name, hex_colour in BASIC.items():
        shade = np.clip(np.array(hex_to_rgb(hex_colour)) + rng.integers(-4, 5, 3), 0, 255)
        hues = hues_of(Image.new("RGB", (30, 45), tuple(int(c) for c in shade)), tmp_path)
        assert hues.labels == [name] and hues.shares == {name: pytest.approx(1.0)}, name


def test_title_lettering_below_the_share_threshold_is_not_a_label(tmp_path):
    img = Image.new("RGB", (160, 240), hex_to_rgb(BASIC["teal"]))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 160, 160, 240], fill=hex_to_rgb(BASIC["beige"]))
    draw.text((20, 40), "A Very Long\nTitle Here", fill=(255, 255, 0), font_size=18)
    hues = hues_of(img, tmp_path)
    assert hues.labels == ["teal", "beige"] and hues.shares.get("yellow", 0) < 0.05


def test_a_cover_where_no_colour_reaches_the_share_keeps_its_largest():
    assert ch.choose_labels({"red": 0.09, "blue": 0.08, "white": 0.07}, 0.10) == ["red"]
    assert ch.choose_labels({"red": 0.5, "blue": 0.1, "white": 0.0999}, 0.10) == ["red", "blue"]


def test_kmeans_is_deterministic_for_a_seed_and_shares_sum_to_one():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (4000, 3), dtype=np.uint8)
    a = ch.dominant_colours(pixels, k=6, seed=5)
    b = ch.dominant_colours(pixels, k=6, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert len(a[1]) == 6 and a[1].sum() == pytest.approx(1.0) and np.all(np.diff(a[1]) <= 0)


# ---------------------------------------------------------------- odd and broken files
def test_grayscale_image_is_read_as_greys(tmp_path):
    img = Image.new("L", (40, 60), 0)
    ImageDraw.Draw(img).rectangle([0, 30, 40, 60], fill=255)
    hues = hues_of(img, tmp_path)
    assert hues.labels == ["black", "white"] and hues.shares["black"] == pytest.approx(0.5, abs=0.03)


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    arr = np.full((40, 40), 146 * 257, dtype=np.uint16)          # mid grey in 16 bits
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    assert hues_of(img, tmp_path).labels == ["grey"]


def test_transparent_pixels_are_no_part_of_the_cover(tmp_path):
    img = Image.new("RGBA", (40, 60), (255, 0, 0, 0))               # invisible red
    ImageDraw.Draw(img).rectangle([0, 0, 40, 14], fill=(*NAVY, 255))
    hues = hues_of(img, tmp_path)
    assert hues.labels == ["navy"] and hues.shares == {"navy": pytest.approx(1.0)}


def test_palette_mode_png_with_a_transparent_index(tmp_path):
    img = Image.new("P", (40, 40), 0)
    img.putpalette([255, 255, 255, 3, 67, 223] + [0] * 762)
    ImageDraw.Draw(img).rectangle([0, 0, 40, 9], fill=1)          # a quarter blue, the rest index 0
    img.info["transparency"] = 0
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    hues = ch.cover_hues(path, BASIC)
    assert hues.labels == ["blue"] and hues.shares["blue"] == pytest.approx(1.0)


def test_one_pixel_image(tmp_path):
    assert hues_of(Image.new("RGB", (1, 1), (250, 116, 8)), tmp_path).labels == ["orange"]


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (40, 40), (0, 255, 255, 0))            # full magenta + yellow ink: red
    assert hues_of(img, tmp_path, "cmyk.jpg", quality=95).labels == ["red"]


@pytest.mark.parametrize("content, reason", [
    (b"", "empty_file"),
    (b"this is not an image at all" * 10, "not_an_image"),
    (None, "corrupt_image"),                                         # a PNG cut in half
])
def test_unreadable_files_raise_a_hue_error_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is None:
        buf = io.BytesIO()
        Image.effect_noise((120, 180), 60).save(buf, format="PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ch.HueError) as err:
        ch.cover_hues(path, BASIC)
    assert err.value.reason == reason and "bad.png" in str(err.value)


def test_fully_transparent_and_missing_files_are_errors(tmp_path):
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(ch.HueError) as err:
        ch.cover_hues(tmp_path / "clear.png", BASIC)
    assert err.value.reason == "transparent"
    with pytest.raises(ch.HueError) as err:
        ch.cover_hues(tmp_path / "gone.png", BASIC)
    assert err.value.reason == "missing_file"


# ---------------------------------------------------------------- the command
def write_details(path: Path, urls: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "title", "text", "labels"])
        for i, url in enumerate(urls):
            w.writerow([url, f"Book {i}", f"A description of book {i}, with a comma.", json.dumps(["Fantasy"])])


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cover_hues", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_records_unreadable_covers_and_goes_on(tmp_path):
    covers = tmp_path / "covers"
    covers.mkdir()
    urls = [f"https://example.org/books/view/{i}" for i in range(6)]
    three_band_cover().save(covers / "0.png")
    Image.new("RGB", (20, 30), (255, 129, 192)).save(covers / "1.jpg")
    (covers / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with open(covers / "covers.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "cover_url", "file", "content_type", "bytes"])
        w.writerows([[urls[0], "", "0.png", "", ""], [urls[1], "", "1.jpg", "", ""], [urls[2], "", "2.png", "", ""],
                     [urls[3], "", "missing.png", "", ""], [urls[4], "", "../covers/../../etc/passwd", "", ""]])
    write_details(tmp_path / "details.csv", urls + [urls[0]])          # url 5 has no cover; url 0 twice
    out = tmp_path / "out" / "books_hues.csv"
    r = run_cli(["--details", str(tmp_path / "details.csv"), "--covers", str(covers), "--out", str(out),
                 "--min-share", "0.08"])
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [row["url"] for row in rows] == urls[:2]
    assert list(rows[0]) == list(ch.OUT_COLUMNS)
    assert json.loads(rows[0]["labels"]) == ["red", "navy", "white"] and json.loads(rows[1]["labels"]) == ["pink"]
    assert json.loads(rows[0]["genres"]) == ["Fantasy"] and rows[0]["text"].endswith("with a comma.")
    errors = {e["url"]: e["reason"] for e in csv.DictReader(open(out.with_name("books_hues.errors.csv")))}
    assert errors == {urls[2]: "corrupt_image", urls[3]: "missing_file", urls[4]: "bad_file_name"}
    assert "6 books, 5 with a cover, 2 read, 3 unreadable" in r.stdout
    assert json.loads(out.with_name("books_hues_types_encoded.json").read_text()) == {n: i for i, n in enumerate(BASIC)}
    assert json.loads(out.with_name("palette.json").read_text()) == BASIC
    assert out.with_name("books_hues_label_frequencies.png").stat().st_size > 0


@pytest.mark.parametrize("case, message", [
    ("no_details", "--details .* does not exist"),
    ("no_text_column", "has no text column"),
    ("no_manifest", "covers.csv"),
    ("bad_palette", "neither a built-in palette"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, case, message):
    covers = tmp_path / "covers"
    covers.mkdir()
    (covers / "covers.csv").write_text("url,file\n")
    details = tmp_path / "details.csv"
    write_details(details, ["https://example.org/books/view/1"])
    args = ["--details", str(details), "--covers", str(covers), "--out", str(tmp_path / "o.csv")]
    if case == "no_details":
        args[1] = str(tmp_path / "nope.csv")
    elif case == "no_text_column":
        details.write_text("url,title\nhttps://example.org/1,T\n")
    elif case == "no_manifest":
        (covers / "covers.csv").unlink()
    else:
        args += ["--palette", "nope"]
    r = run_cli(args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m training.cover_hues: error:")
    assert re.search(message, last), last


@pytest.fixture(scope="module")
def sample_hues(tmp_path_factory) -> Path:
    """The command on the committed sample covers (in-process: ~2 s)."""
    out = tmp_path_factory.mktemp("hues") / "sample_hues.csv"
    assert ch.main(["--details", str(SAMPLE / "books.csv"), "--covers", str(SAMPLE), "--out", str(out),
                    "--no-progress", "--no-plot"]) == 0
    return out


def test_sample_covers_get_plausible_labels(sample_hues):
    manifest = list(csv.DictReader(open(SAMPLE / "covers.csv", encoding="utf-8")))
    rows = list(csv.DictReader(open(sample_hues, encoding="utf-8")))
    assert [r["url"] for r in rows] == [m["url"] for m in manifest] and len(rows) >= 60
    counts: dict[str, int] = {}
    for row in rows:
        labels, shares = json.loads(row["labels"]), json.loads(row["shares"])
        assert labels and set(labels) <= set(BASIC)
        assert sum(shares.values()) == pytest.approx(1.0, abs=0.002)
        assert labels == [n for n, s in shares.items() if s >= 0.1] or labels == list(shares)[:1]
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    assert len(counts) >= 15 and max(counts.values()) <= 0.5 * len(rows)     # varied, no colour everywhere
    assert 2.0 <= np.mean([len(json.loads(r["labels"])) for r in rows]) <= 3.5
    assert not open(sample_hues.with_name("sample_hues.errors.csv")).read().strip().count("\n")


def test_sample_covers_are_what_the_script_draws(tmp_path):
    r = subprocess.run([sys.executable, "scripts/draw_sample_covers.py", "--out-dir", str(tmp_path / "covers"),
                        "--manifest", str(tmp_path / "covers.csv")], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    ours = list(csv.DictReader(open(tmp_path / "covers.csv")))
    committed = list(csv.DictReader(open(SAMPLE / "covers.csv")))
    assert [(o["url"], o["file"]) for o in ours] == [(c["url"], c["file"]) for c in committed]
    total = 0
    for row in committed:
        path = SAMPLE / row["file"]
        total += path.stat().st_size
        with Image.open(path) as a, Image.open(tmp_path / row["file"]) as b:
            assert a.size == (160, 240) and np.array_equal(np.asarray(a), np.asarray(b)), row["file"]
    assert total < 2 * 1024 * 1024


# ---------------------------------------------------------------- end to end
def test_sample_hues_to_prepared_data_to_bundle_to_flask_swatches(sample_hues, tmp_path):
    """hues CSV → python -m training.prepare → tiny model → compression → bundle marked "colors" → Flask swatches."""
    import requests
    from bs4 import BeautifulSoup
    from werkzeug.serving import make_server

    from compression.quantize import build_bundle
    from flask_app import create_app
    from tests.tiny_bundle import make_tiny_model_dir

    processed = tmp_path / "processed"
    r = subprocess.run([sys.executable, "-m", "training.prepare", "--input", str(sample_hues), "--out", str(processed),
                        "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    labels = list(json.loads((processed / "labels.json").read_text()))
    assert len(labels) >= 10 and set(labels) <= set(BASIC)

    model = make_tiny_model_dir(tmp_path / "model", labels, with_data=False)
    settings = json.loads((model / "settings.json").read_text())
    (model / "settings.json").write_text(json.dumps({**settings, "data": str(processed)}))
    bundle = build_bundle(model, model / "bundle", bench_rounds=0, quiet=True)
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["label_display"] == "colors"             # found through report.json → the hues CSV's palette.json
    assert info["label_colors"] == {lab: BASIC[lab] for lab in labels}

    server = make_server("127.0.0.1", 0, create_app(bundle), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = requests.post(f"http://127.0.0.1:{server.server_port}/",
                             data={"text": "A lighthouse keeper's wife on a stormy coast.", "threshold": "0"},
                             timeout=20)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert page.status_code == 200
    chips = BeautifulSoup(page.text, "html.parser").select("#predicted li")
    fills = {li["data-label"]: li.find("svg", class_="swatch").find("rect")["fill"] for li in chips}
    assert fills == {lab: BASIC[lab] for lab in labels}


def test_genre_models_are_not_turned_into_swatches_by_a_palette_nearby(tmp_path):
    from compression.bundle import label_display
    from training.modeldir import read_model_dir
    from tests.tiny_bundle import make_tiny_model_dir

    model = make_tiny_model_dir(tmp_path / "model", ["Fantasy", "red"], with_data=False)
    (model / "palette.json").write_text(json.dumps(BASIC))
    assert label_display(read_model_dir(model)) == {"label_display": "text"}
    (model / "label_colors.json").write_text(json.dumps({"Fantasy": "#4b1d6e", "red": "#e50000"}))
    assert label_display(read_model_dir(model))["label_colors"] == {"Fantasy": "#4b1d6e", "red": "#e50000"}
