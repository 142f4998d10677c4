"""Named colour palettes for cover-colour labels, and the colour science they need (sRGB → CIELAB, ΔE).

    from training.palette import get_palette, srgb_to_lab, delta_e_2000
    palette = get_palette("basic")            # {"black": "#000000", ..., "lavender": "#c79fef"}

Why this palette. The seeds labelled covers with 58 colour names (`color_types_encoded50.json`) that mixed
near-synonyms ("navy blue"/"dark blue"/"midnight blue", ...). With names that close, the label a cover gets
depends on a few ΔE units of JPEG noise, lighting and printing, and a text model cannot learn a difference
no reader of the description could know. We want names people agree on, so:

* the core is Berlin & Kay's 11 basic colour terms (Basic Color Terms, 1969) — black, white, grey, red,
  orange, yellow, green, blue, purple, pink, brown — the colour words found across languages, with the most
  stable boundaries in naming experiments;
* extended with 16 common shades that covers use a lot and that English speakers name consistently:
  light/dark grey (the grey axis is where covers spend most of their pixels), maroon, magenta, peach, tan,
  beige, gold, olive, dark green, lime, teal, turquoise, light blue, navy, lavender. 27 names in all, no
  two closer than 8.7 CIEDE2000 units (light grey–white is the closest pair), so a cluster's name is
  decided by its colour, not by noise;
* every hex value is the one the xkcd colour survey gives for that name (Randall Munroe, 2010: some 200,000
  participants naming random screen colours; the representative colours of the ~950 most used names are
  public domain, CC0, at https://xkcd.com/color/rgb/ and ship with matplotlib as `XKCD_COLORS`). They are
  what people actually call "teal" or "navy" on a screen, rather than the CSS/X11 keywords (where "green"
  is #008000 and "brown" is a dark red).

`--palette` in `training.cover_hues` takes "basic" (this one), "basic11" (the eleven terms alone, for coarse
labels) or a JSON file `{"name": "#rrggbb"}` for a palette of your own.

Colour science: sRGB (IEC 61966-2-1, D65) → linear RGB → CIE XYZ → CIELAB with the D65 white; ΔE as
CIE76 (Euclidean in Lab) and CIEDE2000 (Sharma, Wu & Dalal 2005, checked against their published pairs).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

BASIC: dict[str, str] = {   # Berlin & Kay's 11 basic terms + 16 common shades; hex from the xkcd colour survey
    "black": "#000000",
    "dark grey": "#363737",
    "grey": "#929591",
    "light grey": "#d8dcd6",
    "white": "#ffffff",
    "red": "#e50000",
    "maroon": "#650021",
    "pink": "#ff81c0",
    "magenta": "#c20078",
    "orange": "#f97306",
    "peach": "#ffb07c",
    "brown": "#653700",
    "tan": "#d1b26f",
    "beige": "#e6daa6",
    "yellow": "#ffff14",
    "gold": "#dbb40c",
    "olive": "#6e750e",
    "green": "#15b01a",
    "dark green": "#033500",
    "lime": "#aaff32",
    "teal": "#029386",
    "turquoise": "#06c2ac",
    "light blue": "#95d0fc",
    "blue": "#0343df",
    "navy": "#01153e",
    "purple": "#7e1e9c",
    "lavender": "#c79fef",
}
BASIC11_NAMES = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
PALETTES: dict[str, dict[str, str]] = {
    "basic": BASIC,
    "basic11": {name: BASIC[name] for name in BASIC11_NAMES},
}
HEX_RE = re.compile(r"^#[0-9a-fA-F]{6}$")

# sRGB (D65) → XYZ, IEC 61966-2-1; D65 reference white with Y = 1
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
D65_WHITE = np.array([0.95047, 1.00000, 1.08883])


class PaletteError(ValueError):
    """A palette name or file that cannot be used; the message names it."""


def get_palette(spec: str | Path = "basic") -> dict[str, str]:
    """A built-in palette by name, or a JSON file `{"name": "#rrggbb"}`; names keep their order."""
    if str(spec) in PALETTES:
        return dict(PALETTES[str(spec)])
    path = Path(spec)
    if not path.is_file():
        raise PaletteError(f"--palette {spec}: neither a built-in palette ({', '.join(PALETTES)}) nor a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PaletteError(f"--palette {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise PaletteError(f"--palette {path}: expected a non-empty object {{\"name\": \"#rrggbb\"}}")
    bad = [f"{k}={v!r}" for k, v in data.items() if not (isinstance(v, str) and HEX_RE.match(v))]
    if bad:
        raise PaletteError(f"--palette {path}: values must be #rrggbb hex colours (bad: {', '.join(bad[:3])})")
    return {str(k).strip(): v.lower() for k, v in data.items()}


def hex_to_rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def rgb_to_hex(rgb) -> str:
    r, g, b = (int(round(min(255.0, max(0.0, float(c))))) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def srgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB colours given as 0-255 values, shape (..., 3) → (..., 3) float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / D65_WHITE
    eps, kappa = 216 / 24389, 24389 / 27          # CIE's exact constants, not the rounded 0.008856 / 903.3
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e_76(lab1, lab2) -> np.ndarray:
    """CIE76 colour difference: Euclidean distance in Lab (broadcasts)."""
    return np.linalg.norm(np.asarray(lab1, float) - np.asarray(lab2, float), axis=-1)


def delta_e_2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), vectorised and broadcasting over leading axes."""
    lab1, lab2 = np.asarray(lab1, dtype=np.float64), np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar ** 7 / (c_bar ** 7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    both = (c1p * c2p) != 0                                # hue is undefined for a neutral colour

    dl = L2 - L1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(both, dh, 0.0)
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_bar = (L1 + L2) / 2
    cp_bar = (c1p + c2p) / 2
    hsum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(hsum < 360, hsum + 360, hsum - 360), hsum) / 2
    h_bar = np.where(both, h_bar, hsum)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_bar ** 7 / (cp_bar ** 7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dc / s_c) * (dH / s_h))


def palette_lab(palette: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """The palette's names and their Lab coordinates, shape (n, 3), in the palette's order."""
    names = list(palette)
    return names, srgb_to_lab(np.array([hex_to_rgb(palette[n]) for n in names], dtype=np.float64))


def nearest_names(lab: np.ndarray, palette: dict[str, str], metric: str = "ciede2000") -> tuple[list[str], np.ndarray]:
    """For each Lab colour (n, 3): the nearest palette name and its ΔE, by CIEDE2000 or CIE76."""
    names, ref = palette_lab(palette)
    lab = np.atleast_2d(np.asarray(lab, dtype=np.float64))
    diff = delta_e_2000 if metric == "ciede2000" else delta_e_76
    dist = diff(lab[:, None, :], ref[None, :, :])          # (n, palette)
    best = dist.argmin(axis=1)
    return [names[i] for i in best], dist[np.arange(len(lab)), best]
