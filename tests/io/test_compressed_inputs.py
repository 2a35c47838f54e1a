"""Compressed inputs: streamed in bounded pieces, cut at zstd frames, strict about truncation."""

from __future__ import annotations

import gzip
import io
import random
import struct
from pathlib import Path

import orjson
import pytest
import zstandard

from pipeline.errors import CorruptInput
from pipeline.io.compression import iter_decompressed, open_decompressed
from pipeline.io.frames import frame_starts
from pipeline.io.records import (
    iter_partition,
    plan_partitions,
    read_partition_data,
)
from pipeline.io.storage import resolve


def _corpus(n: int = 3000, seed: int = 1) -> bytes:
    """JSONL with blank lines, bad lines, CRLF ends and lines of very different lengths."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        if i % 97 == 0:
            lines.append(b"")
        elif i % 101 == 0:
            lines.append(b"not json")
        else:
            text = " ".join(
                rng.choice(("alpha", "beta", "gamma", "δέλτα", "日本"))
                for _ in range(rng.randint(0, 400))
            )
            lines.append(orjson.dumps({"i": i, "text": text}) + (b"\r" if i % 13 == 0 else b""))
    return b"\n".join(lines) + b"\n"


def _multi_frame(data: bytes, frames: int, seed: int = 2) -> tuple[bytes, list[int]]:
    """``data`` as zstd frames cut at arbitrary bytes (not at line ends); the frame sizes."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), frames - 1))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    compressor = zstandard.ZstdCompressor(level=1)
    blobs = [compressor.compress(p) for p in pieces]
    return b"".join(blobs), [(len(b), len(p)) for b, p in zip(blobs, pieces, strict=True)]


def _seek_table(sizes: list[tuple[int, int]]) -> bytes:
    """The zstd seekable format's seek table (a skippable frame) for frames of ``sizes``."""
    entries = b"".join(struct.pack("<II", c, d) for c, d in sizes)
    footer = struct.pack("<IBI", len(sizes), 0, 0x8F92EAB1)
    body = entries + footer
    return struct.pack("<II", 0x184D2A5E, len(body)) + body


def _read_all(path: Path, target: int) -> tuple[int, list, list, int]:
    parts = plan_partitions([str(path)], target_bytes=target)
    records, rejects, blank = [], [], 0
    for part in parts:
        data = read_partition_data(part)
        records += [(r.offset, r["i"]) for r in data.records]
        rejects += [(r["offset"], r["raw"]) for r in data.rejects]
        blank += data.blank_lines
    return len(parts), records, rejects, blank


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compressed")
    data = _corpus()
    frames, sizes = _multi_frame(data, 30)
    files = {
        "plain": folder / "a.jsonl",
        "gzip": folder / "a.jsonl.gz",
        "zstd": folder / "a.jsonl.zst",
        "frames": folder / "frames.jsonl.zst",
        "seekable": folder / "seekable.jsonl.zst",
    }
    files["plain"].write_bytes(data)
    files["gzip"].write_bytes(gzip.compress(data, mtime=0))
    files["zstd"].write_bytes(zstandard.ZstdCompressor().compress(data))
    files["frames"].write_bytes(frames)
    files["seekable"].write_bytes(frames + _seek_table(sizes))
    return files


@pytest.mark.parametrize("name", ["gzip", "zstd", "frames", "seekable"])
@pytest.mark.parametrize("target", [1 << 30, 200_000, 30_000])
def test_compressed_files_read_like_the_plain_file(corpus_files, name: str, target: int) -> None:
    _, *want = _read_all(corpus_files["plain"], 1 << 30)
    parts, *got = _read_all(corpus_files[name], target)
    assert got == want  # every line once, same offsets, whatever the partitioning
    if name in ("frames", "seekable") and target < 1 << 30:
        assert parts > 3  # cut at frame starts into several tasks
    else:
        assert parts == 1  # gzip and single-frame zstd: one sequential reader


def test_frame_starts_from_seek_table_and_from_headers(corpus_files) -> None:
    fs, path = resolve(str(corpus_files["seekable"]))
    size = corpus_files["seekable"].stat().st_size
    by_table = frame_starts(fs, path, size, local=False)  # what an object store gets
    assert by_table is not None and len(by_table) == 31
    fs, path = resolve(str(corpus_files["frames"]))
    size = corpus_files["frames"].stat().st_size
    assert frame_starts(fs, path, size, local=False) is None  # no table: not walked remotely
    walked = frame_starts(fs, path, size, local=True)
    assert walked is not None and [u for _, u in walked] == [u for _, u in by_table]


def test_a_single_frame_or_small_file_stays_one_partition(corpus_files) -> None:
    parts = plan_partitions([str(corpus_files["zstd"])], target_bytes=1000)
    size = corpus_files["zstd"].stat().st_size
    assert [(p.start, p.end, p.ustart, p.uend) for p in parts] == [(0, size, 0, -1)]


def test_streams_are_parsed_in_bounded_batches(corpus_files) -> None:
    part = plan_partitions([str(corpus_files["gzip"])])[0]
    batches = list(iter_partition(part, batch_bytes=64 << 10))
    text = corpus_files["plain"].read_bytes()
    assert len(batches) >= len(text) // (64 << 10) - 1
    for batch in batches:  # a batch holds about batch_bytes of text (plus one line)
        assert sum(len(orjson.dumps(r)) for r in batch.records) < 3 * (64 << 10)
    records = [r for b in batches for r in b.records]
    assert [r["i"] for r in records] == [r["i"] for r in read_partition_data(part).records]
    lines = text.split(b"\n")
    assert all(lines[r.line - 1].startswith(b'{"i":%d,' % r["i"]) for r in records)


def test_a_line_longer_than_a_batch_is_one_record(tmp_path: Path) -> None:
    long = orjson.dumps({"i": 1, "text": "y" * (3 << 20)})
    data = b'{"i":0,"text":"a"}\n' + long + b'\n{"i":2,"text":"b"}'
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    part = plan_partitions([str(tmp_path / "a.jsonl.zst")])[0]
    records = [r for b in iter_partition(part, batch_bytes=1 << 16) for r in b.records]
    assert [r["i"] for r in records] == [0, 1, 2] and len(records[1]["text"]) == 3 << 20


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_stream_is_an_error_naming_file_and_offset(
    tmp_path: Path, kind: str, cut: float
) -> None:
    data = _corpus(800)
    blob = gzip.compress(data) if kind == "gzip" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut.jsonl.{'gz' if kind == 'gzip' else 'zst'}"
    path.write_bytes(blob[: int(len(blob) * cut)])
    with pytest.raises(CorruptInput, match=rf"{path.name} is truncated: the {kind} stream ends at"):
        read_partition_data(plan_partitions([str(path)])[0])


@pytest.mark.parametrize(
    ("name", "blob", "message"),
    [
        ("fake.jsonl.gz", b'{"text": "plain"}\n', "is not gzip data"),
        ("fake.jsonl.zst", b'{"text": "plain"}\n', "is not zstd data"),
        ("tail.jsonl.gz", gzip.compress(b'{"text": "a"}\n') + b"junk", "unexpected data after"),
        ("crc.jsonl.gz", gzip.compress(b'{"text": "a"}\n' * 100)[:-8] + b"\0" * 8, "corrupt"),
    ],
)
def test_data_that_is_not_what_the_name_says_is_an_error(
    tmp_path: Path, name: str, blob: bytes, message: str
) -> None:
    (tmp_path / name).write_bytes(blob)
    with pytest.raises(CorruptInput, match=message):
        read_partition_data(plan_partitions([str(tmp_path / name)])[0])


def test_gzip_members_and_zero_padding_are_one_stream(tmp_path: Path) -> None:
    blob = gzip.compress(b'{"i": 0}\n') + gzip.compress(b'{"i": 1}\n') + b"\x00" * 512
    (tmp_path / "m.jsonl.gz").write_bytes(blob)
    records = read_partition_data(plan_partitions([str(tmp_path / "m.jsonl.gz")])[0]).records
    assert [r["i"] for r in records] == [0, 1]


def test_decompressed_pieces_are_bounded() -> None:
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB
    pieces = iter_decompressed([bomb], "gzip", "bomb.gz")
    assert max(len(p) for p in pieces) <= 4 << 20


def test_open_decompressed_names_the_file_it_reads(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b"x\n" * 1000)[:30])
    with open(path, "rb") as handle, pytest.raises(CorruptInput, match="x.jsonl.gz is truncated"):
        open_decompressed(handle, "gzip").read()
    assert open_decompressed(io.BytesIO(gzip.compress(b"abc")), "gzip").read() == b"abc"


def test_on_s3_only_a_seek_table_cuts_a_zstd_file(corpus_files, s3_server, s3_bucket) -> None:
    fs = s3_server.filesystem()
    bucket = s3_bucket.removeprefix("s3://")
    for name in ("seekable", "frames"):
        fs.put(str(corpus_files[name]), f"{bucket}/{corpus_files[name].name}")
    options = s3_server.storage_options
    _, *want = _read_all(corpus_files["plain"], 1 << 30)
    for name, cut in (("seekable", True), ("frames", False)):
        url = f"{s3_bucket}/{corpus_files[name].name}"
        parts = plan_partitions([url], options, target_bytes=20_000)
        got = [[], [], 0]
        for part in parts:
            data = read_partition_data(part, options)
            got[0] += [(r.offset, r["i"]) for r in data.records]
            got[1] += [(r["offset"], r["raw"]) for r in data.rejects]
            got[2] += data.blank_lines
        assert got == want and (len(parts) > 3) == cut
