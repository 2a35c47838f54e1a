"""Fuzzing ``dexport inspect`` with corrupt ``.idx`` files.

A small valid dataset is written once; each case mutates a copy of its ``.idx`` (bit flips,
truncations, appended bytes, header fields set to edge or random values, array entries
overwritten) from a fixed seed and runs ``dexport inspect`` on it in this process. Every case
must end within a few seconds with exit 2 and exactly one ``dexport: error:`` line, or with
exit 0 when the mutation happens to leave a valid dataset; no traceback, no signal, and no
allocation beyond a few hundred MB (traced with ``tracemalloc``, which NumPy reports to). A
quarter of the cases also build the training order (``--seq-len … --build-index``), which reads
every array of the index.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
import signal
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli
from pipeline.formats.indexed_dataset import HEADER_SIZE, IndexedDatasetBuilder

CASES = 400
SEED = 20241130
TIME_LIMIT_S = 5
MEMORY_LIMIT = 256 << 20  # bytes traced at peak, per case
N_DOCS = 24

# Header fields: (offset, struct format).
VERSION, DTYPE, N_SEQ, N_DOC = (9, "<Q"), (17, "<B"), (18, "<Q"), (26, "<Q")
EDGE_U64 = (0, 1, 2, N_DOCS - 1, N_DOCS, N_DOCS + 1, N_DOCS + 2)
EDGE_U64 += (2**31, 2**32, 2**47, 2**63, 2**64 - 1)


@pytest.fixture(scope="module")
def valid_idx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """(folder, .idx bytes, .bin bytes) of a small valid uint16 dataset."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    builder = IndexedDatasetBuilder(str(root / "ok"), np.uint16)
    for _ in range(N_DOCS):
        builder.add_document(rng.integers(0, 5000, int(rng.integers(1, 40))))
    builder.finalize()
    return root, (root / "ok.idx").read_bytes(), (root / "ok.bin").read_bytes()


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random corruption of ``data`` and a short name for it."""
    buf = bytearray(data)
    kind = rng.choice(
        ["flip", "flips", "truncate", "header", "header_random", "array", "append", "magic"]
    )
    if kind == "flip":
        pos = rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
        return f"flip@{pos}", bytes(buf)
    if kind == "flips":
        for _ in range(rng.randint(2, 16)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return "flips", bytes(buf)
    if kind == "truncate":
        cut = rng.choice([0, 1, HEADER_SIZE - 1, HEADER_SIZE, rng.randrange(len(buf))])
        return f"truncate@{cut}", bytes(buf[:cut])
    if kind in ("header", "header_random"):
        offset, fmt = rng.choice([VERSION, DTYPE, N_SEQ, N_DOC])
        if fmt == "<B":
            value = rng.randrange(256)
        elif kind == "header":
            value = rng.choice(EDGE_U64)
        else:
            value = rng.getrandbits(64)
        struct.pack_into(fmt, buf, offset, value)
        return f"field@{offset}={value}", bytes(buf)
    if kind == "array":
        # One entry of sizes (int32), pointers (int64) or doc_idx (int64) overwritten.
        region = rng.choice(["sizes", "pointers", "doc_idx"])
        start = {
            "sizes": HEADER_SIZE,
            "pointers": HEADER_SIZE + 4 * N_DOCS,
            "doc_idx": HEADER_SIZE + 12 * N_DOCS,
        }[region]
        count, fmt = (N_DOCS, "<i") if region == "sizes" else (N_DOCS + (region == "doc_idx"), "<q")
        item = rng.randrange(count)
        bits = 32 if fmt == "<i" else 64
        value = rng.choice([-1, 0, 1, 2**31 - 1, -(2**31), rng.getrandbits(bits - 1)])
        if fmt == "<q":
            value = rng.choice([value, 2**62, -(2**63)])
        struct.pack_into(fmt, buf, start + item * (4 if fmt == "<i" else 8), value)
        return f"{region}[{item}]={value}", bytes(buf)
    if kind == "append":
        extra = rng.randbytes(rng.choice([1, 7, N_DOCS, 4096]))
        return f"append{len(extra)}", bytes(buf) + extra  # trailing bytes are allowed
    buf[rng.randrange(9)] ^= 0xFF
    return "magic", bytes(buf)


class _TimedOut(Exception):
    pass


def _on_alarm(signum, frame):  # noqa: ARG001
    raise _TimedOut


def _run(argv: list[str]) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak traced bytes) of one in-process run, time-bounded."""
    out, err = io.StringIO(), io.StringIO()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as exc:  # argparse
                rc = int(exc.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    peak = tracemalloc.get_traced_memory()[1] - before
    return rc, out.getvalue(), err.getvalue(), peak


def test_inspect_survives_corrupt_idx(valid_idx, tmp_path, monkeypatch) -> None:
    # One parser for every case (building it is most of a case's time); main() is unchanged.
    monkeypatch.setattr(cli, "build_parser", functools.lru_cache(cli.build_parser))
    _root, idx, bin_bytes = valid_idx
    rng = random.Random(SEED)
    prefix = tmp_path / "ds"
    Path(f"{prefix}.bin").write_bytes(bin_bytes)
    outcomes = {0: 0, 2: 0}
    failures = []
    tracemalloc.start()
    try:
        for case in range(CASES):
            name, mutated = _mutate(idx, rng)
            Path(f"{prefix}.idx").write_bytes(mutated)
            argv = ["inspect", str(prefix)]
            if case % 4:
                argv += ["--document", str(rng.randrange(N_DOCS))]
            else:
                argv += [
                    *("--seq-len", "8", "--seed", "3", "--num-samples", "40"),
                    *("--splits", "100,0,0", "--sequence", "1"),
                    *("--index", f"{tmp_path}/index-{case}/", "--build-index"),
                ]
            try:
                rc, stdout, stderr, peak = _run(argv)
            except _TimedOut:
                failures.append(f"case {case} ({name}): no answer within {TIME_LIMIT_S} s")
                continue
            except BaseException as exc:  # a traceback the command line would have printed
                failures.append(f"case {case} ({name}): {type(exc).__name__}: {exc}")
                continue
            lines = stderr.strip().splitlines()
            errors = [line for line in lines if line.startswith("dexport: error:")]
            if peak > MEMORY_LIMIT:
                failures.append(f"case {case} ({name}): {peak >> 20} MB allocated")
            if rc == 2 and (len(errors) != 1 or errors != lines[-1:] or stdout):
                failures.append(f"case {case} ({name}): exit 2 with stderr {stderr!r}")
            elif rc == 0 and (errors or "documents" not in stdout):
                failures.append(f"case {case} ({name}): exit 0 with stderr {stderr!r}")
            elif rc not in (0, 2):
                failures.append(f"case {case} ({name}): exit {rc}, stderr {stderr!r}")
            if "Traceback" in stderr:
                failures.append(f"case {case} ({name}): traceback {stderr!r}")
            outcomes[rc] = outcomes.get(rc, 0) + 1
    finally:
        tracemalloc.stop()
    assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:20])
    assert outcomes[2] > CASES // 2  # most mutations are caught (the rest stay valid)
