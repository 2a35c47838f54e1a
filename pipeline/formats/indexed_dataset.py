"""Megatron / GPT-NeoX indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``).

Format (little-endian), shared by Megatron-LM, megatron-core, GPT-NeoX, NeMo and datatrove:

====== =====================================================================
offset field
====== =====================================================================
0      magic ``b"MMIDIDX\\x00\\x00"`` (9 bytes)
9      ``<Q`` version = 1
17     ``<B`` dtype code: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16
18     ``<Q`` S = number of sequences
26     ``<Q`` D = number of documents + 1
34     int32[S] sequence lengths, int64[S] byte offsets into .bin, int64[D] document boundaries
====== =====================================================================

Multimodal files append int8[S] modes after the arrays: trailing bytes are accepted. The
``.bin`` file is the raw concatenation of the tokens. Codes 6 and 7 are float types whose
meaning differs between projects; token data never uses them, so they are rejected.

Locally both files are memory-mapped; on object stores the ``.idx`` is read once and tokens
are fetched with byte-range requests, never by downloading the whole ``.bin``.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io.storage import atomic_open, is_local, resolve

MAGIC = b"MMIDIDX\x00\x00"
HEADER_SIZE = 34
DTYPE_BY_CODE: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    8: np.dtype(np.uint16),
}
CODE_BY_DTYPE = {dtype: code for code, dtype in DTYPE_BY_CODE.items()}
# From this many ranges on (a chunk of windows), the compiled read loop; below it, pread from
# Python (a small job does not load compiled code for a few reads).
COMPILED_READ_MIN_RANGES = 256


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The dtype Megatron tools pick for a vocabulary: uint16 when it fits, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def _parse_header(head: bytes, where: str) -> tuple[np.dtype, int, int]:
    if len(head) < HEADER_SIZE or head[:9] != MAGIC:
        raise UserError(
            f"{where} is not a Megatron index file (bad magic); pass the dataset prefix without "
            ".bin/.idx"
        )
    (version,) = struct.unpack_from("<Q", head, 9)
    if version != 1:
        raise UserError(
            f"{where} has index version {version}, only version 1 is supported; re-create it with "
            "Megatron's preprocess_data.py"
        )
    code = head[17]
    if code not in DTYPE_BY_CODE:
        raise UserError(
            f"{where} has dtype code {code}, which is not an integer token type (1,2,3,4,5,8); the "
            "file is corrupt or not token data"
        )
    n_seq, n_doc = struct.unpack_from("<QQ", head, 18)
    return DTYPE_BY_CODE[code], int(n_seq), int(n_doc)


class IndexedDataset:
    """Read-only view of an indexed dataset, local (memory-mapped) or remote (range reads).

    Opening checks the whole ``.idx`` against itself and the ``.bin`` size before any array is
    made from it, so a corrupt or mismatched pair is a :class:`UserError` naming the file (never a
    traceback, and no allocation sized by a header field).
    """

    def __init__(self, prefix: str, storage_options: dict[str, Any] | None = None) -> None:
        self.prefix = prefix
        self.storage_options = dict(storage_options or {})
        self.fs, path = resolve(prefix, self.storage_options)
        self.idx_path, self.bin_path = f"{path}.idx", f"{path}.bin"
        idx_size = self._file_size(self.idx_path, path)
        bin_size = self._file_size(self.bin_path, path)
        self._local = is_local(self.fs)
        if idx_size < HEADER_SIZE:
            raise UserError(
                f"{self.idx_path} is {'empty' if idx_size == 0 else f'only {idx_size} bytes'}, "
                f"too short for a Megatron index header ({HEADER_SIZE} bytes); re-copy or rebuild "
                "the dataset"
            )
        head = self._read_head()
        self.dtype, n_seq, n_doc = _parse_header(head, self.idx_path)
        # Every count is checked against the file size first: no array is sized by the header.
        need = HEADER_SIZE + n_seq * 4 + n_seq * 8 + n_doc * 8
        if idx_size < need:
            raise UserError(
                f"{self.idx_path} is truncated or corrupt ({idx_size} bytes, its header counts "
                f"{n_seq} sequences and {n_doc} document boundaries, which need {need}); re-copy "
                "or rebuild the dataset"
            )
        if n_doc < 1:
            raise UserError(
                f"{self.idx_path} has no document boundaries (at least [0] is required); the "
                "index is corrupt, rebuild it"
            )
        idx_bytes = self._read_idx()
        if len(idx_bytes) < need:  # changed since its size was taken
            raise UserError(f"{self.idx_path} changed while it was read; try again")
        off = HEADER_SIZE
        self.sizes = np.frombuffer(idx_bytes, np.int32, n_seq, off)
        off += n_seq * 4
        self.pointers = np.frombuffer(idx_bytes, np.int64, n_seq, off)
        off += n_seq * 8
        self.doc_idx = np.frombuffer(idx_bytes, np.int64, n_doc, off)
        self._check_consistent(bin_size)
        self.token_starts = self.pointers // self.dtype.itemsize

    def _file_size(self, file_path: str, path: str) -> int:
        """Size of ``file_path``; UserError when it is missing or not a file."""
        name = file_path.rsplit("/", 1)[-1]
        try:
            info = self.fs.info(file_path)
        except FileNotFoundError:
            info = None
        if info is None:
            hint = "pass the prefix of an existing PREFIX.bin + PREFIX.idx pair"
            for ext in (".bin", ".idx"):
                if path.endswith(ext):
                    hint = (
                        f"pass the prefix without {ext} ({self.prefix[: -len(ext)]}): dexport "
                        "adds .bin and .idx itself"
                    )
            raise UserError(f"{self.prefix}: {name} not found; {hint}")
        if info.get("type") == "directory":
            raise UserError(
                f"{file_path} is a folder, not a file; pass the prefix of a PREFIX.bin + "
                "PREFIX.idx pair"
            )
        return int(info.get("size") or 0)

    def _read_head(self) -> bytes:
        with self.fs.open(self.idx_path, "rb") as handle:
            return handle.read(HEADER_SIZE)

    def _read_idx(self) -> np.ndarray | bytes:
        if self._local:
            return np.memmap(self.idx_path, dtype=np.uint8, mode="r")
        return self.fs.cat_file(self.idx_path)

    def _check_consistent(self, bin_size: int) -> None:
        itemsize = self.dtype.itemsize
        corrupt = f"{self.idx_path}: the index is corrupt, rebuild it"
        if len(self.sizes) == 0:
            expected = 0
        else:
            if (self.sizes < 0).any():
                raise UserError(f"{corrupt} (it holds negative sequence lengths)")
            expected = int(self.pointers[-1]) + int(self.sizes[-1]) * itemsize
            starts = np.zeros(len(self.sizes), np.int64)
            np.cumsum(self.sizes[:-1].astype(np.int64) * itemsize, out=starts[1:])
            if not np.array_equal(starts, self.pointers):
                raise UserError(
                    f"{self.idx_path}: byte offsets disagree with sequence lengths; the index is "
                    "corrupt, rebuild it"
                )
        if bin_size != expected:
            raise UserError(
                f"{self.bin_path} has {bin_size} bytes but {self.idx_path} describes {expected}; "
                "the .bin and .idx do not belong together or one is truncated"
            )
        doc_idx = self.doc_idx
        if doc_idx[0] != 0 or doc_idx[-1] != len(self.sizes) or (np.diff(doc_idx) < 0).any():
            raise UserError(
                f"{self.idx_path}: document boundaries do not run upwards over "
                f"0..{len(self.sizes)}; the index is corrupt, rebuild it"
            )

    # -- facts -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def num_tokens(self) -> int:
        """Total number of tokens in the ``.bin``."""
        return int(self.sizes.sum(dtype=np.int64))

    @property
    def num_documents(self) -> int:
        """Number of documents (``len(doc_idx) - 1``); GPT datasets treat sequences as documents."""
        return max(len(self.doc_idx) - 1, 0)

    # -- token access ----------------------------------------------------------------------
    def read(self, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Concatenate token ranges ``[starts[k], starts[k] + lengths[k])`` (in tokens).

        Locally each range is read with ``pread`` straight into the result (many ranges, a chunk
        of windows, from compiled code: ``gpu.file_gather``): a memory map kept open would keep
        every page a worker ever touched in its resident memory, which grows with the dataset
        and makes Dask pause the worker. Remotely one batch of byte-range requests.
        """
        starts = np.asarray(starts, np.int64)
        lengths = np.asarray(lengths, np.int64)
        total = int(lengths.sum())
        out = np.empty(total, self.dtype)
        if total == 0:
            return out
        item = self.dtype.itemsize
        keep = lengths > 0
        b0 = starts[keep] * item
        nbytes = lengths[keep] * item
        if self._local:
            self._read_local(b0, nbytes, out.view(np.uint8))
            return out
        n = len(b0)
        blobs = self.fs.cat_ranges([self.bin_path] * n, b0.tolist(), (b0 + nbytes).tolist())
        for blob in blobs:
            if isinstance(blob, Exception):
                raise blob
        return np.frombuffer(b"".join(blobs), self.dtype)

    def _read_local(self, b0: np.ndarray, nbytes: np.ndarray, out: np.ndarray) -> None:
        fd = os.open(self.bin_path, os.O_RDONLY)
        try:
            first_unread = 0
            if len(b0) >= COMPILED_READ_MIN_RANGES:
                from gpu.file_gather import pread_ranges

                first_unread = pread_ranges(fd, b0, nbytes, out)
                if first_unread < 0:
                    return
            # Few ranges (no compiled code to load for them), or the range the compiled loop
            # could not read: here a short read names the truncated file, an error is raised.
            view = memoryview(out)
            pos = int(nbytes[:first_unread].sum())
            rest = zip(b0[first_unread:].tolist(), nbytes[first_unread:].tolist(), strict=True)
            for offset, size in rest:
                got_total = 0
                while got_total < size:
                    got = os.preadv(fd, [view[pos + got_total : pos + size]], offset + got_total)
                    if got <= 0:
                        raise UserError(
                            f"{self.bin_path} ended early; the file is truncated, re-copy it"
                        )
                    got_total += got
                pos += size
        finally:
            os.close(fd)

    def sequence(self, i: int) -> np.ndarray:
        """Tokens of sequence ``i``."""
        return self.read(self.token_starts[i : i + 1], self.sizes[i : i + 1].astype(np.int64))

    def sequences(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of several sequences as ``(flat tokens, offsets[n+1])``."""
        ids = np.asarray(ids, np.int64)
        lengths = self.sizes[ids].astype(np.int64)
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return self.read(self.token_starts[ids], lengths), offsets


def write_index(handle, dtype: np.dtype, sizes: np.ndarray, doc_idx: np.ndarray) -> None:
    """Write a ``.idx`` for sequences of ``sizes`` stored contiguously in that order."""
    dtype = np.dtype(dtype)
    sizes = np.asarray(sizes, np.int32)
    pointers = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    handle.write(MAGIC)
    handle.write(struct.pack("<Q", 1))
    handle.write(struct.pack("<B", CODE_BY_DTYPE[dtype]))
    handle.write(struct.pack("<Q", len(sizes)))
    handle.write(struct.pack("<Q", len(doc_idx)))
    handle.write(sizes.tobytes(order="C"))
    handle.write(pointers.tobytes(order="C"))
    handle.write(np.asarray(doc_idx, np.int64).tobytes(order="C"))


class IndexedDatasetBuilder:
    """Write an indexed dataset document by document (``add_document`` … ``finalize``).

    Both files are published atomically when the builder is finalized.
    """

    def __init__(
        self, prefix: str, dtype: np.dtype, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_BY_DTYPE:
            raise UserError(
                f"token dtype {self.dtype} is not supported; use one of uint8, int8, int16, int32, "
                "int64, uint16"
            )
        self.fs, path = resolve(prefix, storage_options)
        self.bin_path, self.idx_path = f"{path}.bin", f"{path}.idx"
        self._bin_cm = atomic_open(self.fs, self.bin_path, "wb")
        self._bin = self._bin_cm.__enter__()
        self._sizes: list[int] = []

    def add_document(self, tokens: np.ndarray) -> None:
        """Append one document (one sequence)."""
        arr = np.asarray(tokens)
        if arr.size and (
            arr.min() < np.iinfo(self.dtype).min or arr.max() > np.iinfo(self.dtype).max
        ):
            raise UserError(
                f"token ids out of range for {self.dtype}; build the dataset with a wider dtype "
                "(int32)"
            )
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.append(int(arr.size))

    def add_documents(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Append many documents given as flat tokens + offsets[n+1]."""
        arr = np.asarray(tokens)
        if arr.size and (
            arr.min() < np.iinfo(self.dtype).min or arr.max() > np.iinfo(self.dtype).max
        ):
            raise UserError(
                f"token ids out of range for {self.dtype}; build the dataset with a wider dtype "
                "(int32)"
            )
        self._bin.write(arr.astype(self.dtype, copy=False).tobytes(order="C"))
        self._sizes.extend(np.diff(np.asarray(offsets, np.int64)).tolist())

    def finalize(self) -> None:
        """Publish ``.bin`` then ``.idx`` (readers look for the index last)."""
        self._bin_cm.__exit__(None, None, None)
        sizes = np.asarray(self._sizes, np.int32)
        with atomic_open(self.fs, self.idx_path, "wb") as handle:
            write_index(handle, self.dtype, sizes, np.arange(len(sizes) + 1, dtype=np.int64))

    def abort(self) -> None:
        """Discard what was written (nothing is published)."""
        self._bin_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)
