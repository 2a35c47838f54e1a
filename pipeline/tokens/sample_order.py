"""The training run's sample order and the token windows it yields.

A training run orders samples through three arrays (both GPT-NeoX and megatron-core):

* ``doc_idx`` — document rows of all epochs, shuffled;
* ``sample_idx`` — ``[position in doc_idx, token offset]`` where each sample starts;
* ``shuffle_idx`` — the training order over built samples.

Training sample ``i`` starts at ``sample_idx[shuffle_idx[i]]`` and ends at
``sample_idx[shuffle_idx[i] + 1]``: the window runs from ``offset_f`` in document
``doc_idx[f]`` to ``offset_l + extra`` (exclusive) in document ``doc_idx[l]``, through the whole
documents between, then is cut or padded to ``seq_len + extra`` tokens. With ``extra = 1``
consecutive windows share one token. The same rule covers GPT-NeoX ``packed`` (``offset_l``
inclusive), ``pack_until_overflow`` (``offset_l = 0``: whole documents plus the first token of
the next, cut or zero-padded) and megatron-core (``offset_l + add_extra_token``).

The conventions differ in how the arrays are built (``pipeline.tokens.neox_index``,
``pipeline.tokens.megatron_index``); reading windows is shared here and is one vectorized gather per
chunk of samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset

CONVENTION_NAMES = {"neox": "GPT-NeoX", "megatron": "megatron-core"}


@dataclass
class OrderSource:
    """What was done to get a sample order: files loaded, or arrays built (and where saved).

    ``files`` are the index files read (``built`` False) or written for a built order (empty:
    not saved). A built order's files may still be ``pending`` (``(function, args)`` that
    writes them), so that a command writes nothing before every check has passed; ``save``
    writes them (once).
    """

    convention: str
    built: bool
    files: tuple[str, ...] = ()
    pending: tuple[Any, tuple] | None = None

    def save(self) -> None:
        """Write the built order's files if that is still to do."""
        if self.pending is not None:
            function, args = self.pending
            self.pending = None
            function(*args)

    def describe(self) -> str:
        """One line for stderr: loaded from which files, or built and saved where."""
        name = CONVENTION_NAMES.get(self.convention, self.convention)
        if not self.built:
            return f"training order loaded from the {name} index files {brace_paths(self.files)}"
        if self.files:
            folder = os.path.dirname(self.files[0]) or "."
            return (
                f"training order built as {name} builds it and saved to {folder}/: "
                f"{brace_paths([os.path.basename(f) for f in self.files])}"
            )
        return f"training order built as {name} builds it (not saved; pass --index DIR to keep it)"


def brace_paths(paths: Any) -> str:
    """``a_{doc,sample,shuffle}_idx.npy`` for paths that differ in one middle part."""
    paths = list(paths)
    if len(paths) < 2:
        return "".join(paths)
    head = os.path.commonprefix(paths)
    tail = os.path.commonprefix([p[len(head) :][::-1] for p in paths])[::-1]
    middles = [p[len(head) : len(p) - len(tail)] for p in paths]
    return f"{head}{{{','.join(middles)}}}{tail}"


def check_build_memory(what: str, nbytes: int) -> None:
    """UserError when building an order needs more memory than the machine has available."""
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # no psutil or no reading: build and let the system decide
        return
    if nbytes > available:
        raise UserError(
            f"building {what} needs about {_gib(nbytes)} of memory, more than the "
            f"{_gib(available)} available; check --num-samples / --train-iters / --batch-size "
            "and --seq-len against the training run"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


@dataclass(frozen=True)
class SampleOrder:
    """A built or loaded sample index over one split of an indexed dataset."""

    convention: str  # "neox" or "megatron"
    doc_idx: np.ndarray
    sample_idx: np.ndarray
    shuffle_idx: np.ndarray
    seq_len: int
    extra_tokens: int = 1  # 1 when each window carries the next sample's first token
    pad_token: int = 0
    # GPT-NeoX's GPT2Dataset catches the IndexError of a sample whose last document lies past
    # doc_idx and returns sample ``shuffle_idx[i] % len`` instead; we reproduce that.
    retry_out_of_range: bool = False
    # Where the arrays came from (loaded files, or built and where they are saved).
    source: OrderSource | None = field(default=None, compare=False, repr=False)

    @property
    def window_len(self) -> int:
        """Tokens per window (``seq_len + extra``)."""
        return self.seq_len + self.extra_tokens

    def __len__(self) -> int:
        if self.convention == "megatron":
            # megatron-core's GPTDataset.__len__ is len(sample_idx) - 1, which is also the
            # length of its shuffle index; GPT-NeoX's GPT2Dataset exposes one sample fewer.
            return int(min(len(self.shuffle_idx), len(self.sample_idx) - 1))
        return int(min(len(self.shuffle_idx), len(self.sample_idx)) - 1)

    # -- selection helpers ----------------------------------------------------------------
    def check_ids(self, ids: np.ndarray, what: str = "sample") -> np.ndarray:
        """Return ``ids`` as int64, or raise a UserError naming the first one out of range."""
        ids = np.asarray(ids, np.int64)
        n = len(self)
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            first = int(ids[bad][0])
            raise UserError(
                f"{what} {first} is out of range: this sample order has {n} samples (0..{n - 1}); "
                f"choose ids below {n}"
            )
        return ids

    def doc_details(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """``doc_index_f/l`` (positions in ``doc_idx``) and ``offset_f/l`` of each sample."""
        ids = np.asarray(ids, np.int64)
        start = self.shuffle_idx[ids].astype(np.int64)
        first = self.sample_idx[start].astype(np.int64)
        last = self.sample_idx[start + 1].astype(np.int64)
        return {
            "doc_index_f": first[:, 0],
            "doc_index_l": last[:, 0],
            "offset_f": first[:, 1],
            "offset_l": last[:, 1],
        }

    def spanned_documents(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corpus document rows each sample spans, as ``(flat rows, offsets[n+1])``."""
        det = self.doc_details(ids)
        f = det["doc_index_f"]
        last_pos = len(self.doc_idx) - 1
        l_pos = np.minimum(det["doc_index_l"], last_pos)
        counts = np.maximum(l_pos - f + 1, 0)
        offsets = np.zeros(len(f) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        pos = np.repeat(f - offsets[:-1], counts) + np.arange(int(offsets[-1]))
        return self.doc_idx[pos].astype(np.int64), offsets

    def _token_ids(self, ids: np.ndarray) -> np.ndarray:
        """The ids whose windows are actually read (GPT-NeoX's IndexError retry applied)."""
        if not self.retry_out_of_range:
            return ids
        ids = ids.copy()
        n = len(self)
        for _ in range(8):  # each retry maps to a different id; a chain longer than that is absurd
            det_l = self.sample_idx[self.shuffle_idx[ids].astype(np.int64) + 1, 0]
            bad = det_l >= len(self.doc_idx)
            if not bad.any():
                return ids
            ids[bad] = self.shuffle_idx[ids[bad]].astype(np.int64) % n
        raise UserError(
            "the sample index is corrupt: samples point past the end of doc_idx; rebuild the index"
        )

    # -- windows --------------------------------------------------------------------------
    def plan_windows(
        self, token_starts: np.ndarray, sizes: np.ndarray, ids: np.ndarray
    ) -> WindowPlan:
        """The token ranges that make up the windows of samples ``ids`` (no token is read).

        The plan is small (a few integers per sample and document) and is what a worker needs
        to gather a chunk: the sample index itself never leaves the process that loaded it.
        """
        ids = self._token_ids(np.asarray(ids, np.int64))
        det = self.doc_details(ids)
        f, l_pos = det["doc_index_f"], det["doc_index_l"]
        n, width = len(ids), self.window_len
        # One segment per (sample, document position) pair.
        counts = l_pos - f + 1
        seg_off = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=seg_off[1:])
        n_seg = int(seg_off[-1])
        seg_pos = np.repeat(f - seg_off[:-1], counts) + np.arange(n_seg)
        is_first = np.zeros(n_seg, bool)
        is_first[seg_off[:-1][counts > 0]] = True
        is_last = np.zeros(n_seg, bool)
        is_last[seg_off[1:][counts > 0] - 1] = True
        rows = self.doc_idx[seg_pos].astype(np.int64)
        doc_len = sizes[rows].astype(np.int64)
        begin = np.where(is_first, np.repeat(det["offset_f"], counts), 0)
        end = np.where(is_last, np.repeat(det["offset_l"] + self.extra_tokens, counts), doc_len)
        if self.convention == "megatron":
            # megatron-core reads a window's last part by length, past the document's end into
            # the next sequence of the .bin (only an index built without the extra token and
            # read with it gets there); stop at the end of the file instead of failing.
            file_end = int(token_starts[-1] + sizes[-1]) if len(sizes) else 0
            limit = np.where(is_last, file_end - token_starts[rows], doc_len)
        else:
            limit = doc_len
        length = np.clip(np.minimum(end, limit) - begin, 0, None)
        # Cut each sample at ``width`` tokens before reading anything.
        before = np.cumsum(length) - length
        before -= np.repeat(before[seg_off[:-1]] if n_seg else np.zeros(n, np.int64), counts)
        length = np.clip(np.minimum(length, width - before), 0, None)
        return WindowPlan(token_starts[rows] + begin, length, counts, width, self.pad_token)

    def windows(self, dataset: IndexedDataset, ids: np.ndarray) -> np.ndarray:
        """Token windows of samples ``ids`` as an int64 array ``[len(ids), window_len]``."""
        return self.plan_windows(dataset.token_starts, dataset.sizes, ids).gather(dataset)


@dataclass(frozen=True)
class WindowPlan:
    """Token ranges (``starts``/``lengths``, grouped ``counts`` per sample) of a chunk of
    windows."""

    starts: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    width: int
    pad_token: int

    def gather(self, dataset: IndexedDataset, dtype: np.dtype = np.int64) -> np.ndarray:
        """Read the windows: ``[n, width]`` of ``dtype``, padded with ``pad_token``."""
        n = len(self.counts)
        tokens = dataset.read(self.starts, self.lengths)
        if len(tokens) == n * self.width:
            # Every window is full (the common case): no per-token placement needed.
            return tokens.reshape(n, self.width).astype(dtype, copy=False)
        out = np.full((n, self.width), self.pad_token, dtype)
        if n == 0:
            return out
        seg_sample = np.repeat(np.arange(n), self.counts)
        sample_total = np.bincount(seg_sample, weights=self.lengths, minlength=n).astype(np.int64)
        sample_start = np.cumsum(sample_total) - sample_total
        column = np.arange(len(tokens)) - np.repeat(sample_start, sample_total)
        out[np.repeat(np.arange(n), sample_total), column] = tokens
        return out
