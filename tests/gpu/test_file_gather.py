"""The compiled gather of file byte ranges against slicing the file's bytes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpu.file_gather import pread_ranges
from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import (
    COMPILED_READ_MIN_RANGES,
    IndexedDataset,
    IndexedDatasetBuilder,
)


def test_ranges_read_back_to_back_equal_slices_of_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    starts = rng.integers(0, len(data) - 100, 500)
    sizes = rng.integers(0, 100, 500)
    out = np.empty(int(sizes.sum()), np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pread_ranges(fd, starts, sizes, out) == -1
        past_end = np.array([0, len(data) - 5, 10])
        short = np.empty(30, np.uint8)
        assert pread_ranges(fd, past_end, np.array([10, 10, 10]), short) == 1
        with pytest.raises(ValueError, match="sizes.sum"):
            pread_ranges(fd, starts, sizes, out[:-1])
    finally:
        os.close(fd)
    want = b"".join(data[a : a + n] for a, n in zip(starts.tolist(), sizes.tolist(), strict=True))
    assert out.tobytes() == want


def test_many_ranges_of_a_truncated_bin_name_the_file(tmp_path: Path) -> None:
    prefix = str(tmp_path / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for _ in range(400):
        builder.add_document(np.arange(50, dtype=np.uint16))
    builder.finalize()
    dataset = IndexedDataset(prefix)
    ids = np.arange(len(dataset))
    assert len(ids) >= COMPILED_READ_MIN_RANGES
    tokens, _ = dataset.sequences(ids)
    assert tokens.tolist() == list(range(50)) * 400
    with open(f"{prefix}.bin", "r+b") as handle:  # cut after the reader checked the sizes
        handle.truncate(os.path.getsize(f"{prefix}.bin") - 10)
    with pytest.raises(UserError, match="ended early; the file is truncated"):
        dataset.sequences(ids)
