"""The dataset card's text-length histograms (SVG)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np

from pipeline.corpus.histogram import BINS, histogram_svg

SVG = "{http://www.w3.org/2000/svg}"


def bars(svg: bytes) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [r for r in root.iter(f"{SVG}rect") if r.get("fill") != "white"]


def test_one_bar_per_nonempty_bin_heights_in_proportion() -> None:
    lengths = Counter({10: 4, 20: 2, 30: 1})  # one decade: linear bins
    svg = histogram_svg(lengths, "train: 7 documents")
    heights = sorted(float(r.get("height")) for r in bars(svg))
    assert len(heights) == 3
    assert heights[2] == 2 * heights[1] == 4 * heights[0]


def test_lengths_spanning_decades_get_log_bins() -> None:
    rng = np.random.default_rng(0)
    lengths = Counter(rng.lognormal(7, 1.5, 5_000).astype(int).tolist())
    found = bars(histogram_svg(lengths, "train"))
    assert 20 < len(found) <= BINS
    widths = [float(r.get("width")) for r in found]
    assert max(widths) - min(widths) < 0.2  # equal widths on the log axis


def test_deterministic_escaped_and_empty_split_has_axes_only() -> None:
    lengths = Counter({5: 1, 500: 3})
    assert histogram_svg(lengths, "a") == histogram_svg(Counter(lengths), "a")
    svg = histogram_svg(Counter(), "<test> & co: 0 documents")
    assert bars(svg) == []
    title = ET.fromstring(svg).find(f"{SVG}text")
    assert title is not None and title.text == "<test> & co: 0 documents"
