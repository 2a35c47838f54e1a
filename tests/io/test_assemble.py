"""Appending local files in-kernel, and where that is not available (macOS, Windows)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.io.assemble import copy_local


@pytest.mark.parametrize("in_kernel", [True, False], ids=["copy_file_range", "buffered"])
def test_copy_local_appends_from_the_source_position(tmp_path: Path, monkeypatch, in_kernel):
    if not in_kernel:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    elif not hasattr(os, "copy_file_range"):
        pytest.skip("no copy_file_range on this platform")
    src, out = tmp_path / "src", tmp_path / "out"
    src.write_bytes(bytes(range(256)) * 5000)
    out.write_bytes(b"head:")
    with open(src, "rb") as s, open(out, "r+b") as o:
        s.seek(1000)
        o.seek(0, os.SEEK_END)
        copy_local(s, o)
    assert out.read_bytes() == b"head:" + src.read_bytes()[1000:]
