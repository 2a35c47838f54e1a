"""Text-length histograms for the dataset card, as small SVG files.

SVG is text: it renders on the Hugging Face Hub and on GitHub, diffs, and needs no plotting
library (drawing the same picture with matplotlib cost about a second per export, import
included). Output is a pure function of the lengths, so the card's bytes are deterministic.
"""

from __future__ import annotations

from collections import Counter
from html import escape

import numpy as np

BINS = 40
WIDTH, HEIGHT = 600, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 52  # margins around the plot area
BAR = "#4C72B0"
FONT = 'font-family="sans-serif" font-size="12"'
TITLE_FONT = 'font-family="sans-serif" font-size="14"'


def _bins(lengths: Counter) -> tuple[np.ndarray, np.ndarray, bool]:
    """Bin edges, documents per bin, and whether the edges are log-spaced (lengths spanning
    more than two decades)."""
    values = np.array(sorted(lengths), dtype=np.float64)
    weights = np.array([lengths[int(v)] for v in values], dtype=np.float64)
    lo, hi = max(values[0], 1.0), max(values[-1], 2.0)
    log = hi / lo > 100
    edges = (
        np.geomspace(lo, hi + 1, BINS + 1)
        if log
        else np.linspace(values[0], values[-1] + 1, BINS + 1)
    )
    counts, _ = np.histogram(values, bins=edges, weights=weights)
    return edges, counts.astype(np.int64), log


def _short(value: float) -> str:
    """1234 -> 1.2k, 2500000 -> 2.5M."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def histogram_svg(lengths: Counter, title: str) -> bytes:
    """An SVG histogram of text lengths in characters (log-spaced bins when lengths span
    decades); an empty split gives the axes alone."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base_y = TOP + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" {TITLE_FONT}>'
        f"{escape(title)}</text>",
    ]
    if lengths:
        edges, counts, log = _bins(lengths)
        top = max(int(counts.max()), 1)
        pos = np.log(edges) if log else edges
        xs = LEFT + (pos - pos[0]) / (pos[-1] - pos[0]) * plot_w
        for k, count in enumerate(counts.tolist()):
            if count:
                h = count / top * plot_h
                parts.append(
                    f'<rect x="{xs[k]:.1f}" y="{base_y - h:.1f}" width="{xs[k + 1] - xs[k]:.1f}" '
                    f'height="{h:.1f}" fill="{BAR}"/>'
                )
        for k in range(0, BINS + 1, BINS // 4):
            parts.append(
                f'<text x="{xs[k]:.1f}" y="{base_y + 16}" text-anchor="middle" {FONT}>'
                f"{_short(edges[k])}</text>"
            )
        for frac in (0.0, 0.5, 1.0):
            y = base_y - frac * plot_h
            parts.append(
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>'
                f"{_short(frac * top)}</text>"
            )
    parts += [
        f'<line x1="{LEFT}" y1="{base_y}" x2="{LEFT + plot_w}" y2="{base_y}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base_y}" stroke="black"/>',
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 12}" text-anchor="middle" {FONT}>'
        "text length (characters)</text>",
        f'<text x="16" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" {FONT} '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.0f})">documents</text>',
        "</svg>",
    ]
    return ("\n".join(parts) + "\n").encode()
