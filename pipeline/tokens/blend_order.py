"""A blended run's sample order: each dataset's own order, and the blending index over them.

Sample ``i`` of the blend is sample ``dataset_sample_index[i]`` of dataset
``dataset_index[i]``, as GPT-NeoX's ``BlendableDataset`` and megatron-core's ``BlendedDataset``
read it. How many samples each dataset is built for, how long the blend is and how a dataset is
read past its end differ by framework (rules in docs/tokens.md, "Blended runs"):

GPT-NeoX
    ``w = x / sum(x)``; dataset ``k`` (every document, cache names ``{split}_{k}``) is built for
    ``ceil(N * w_k * 1.005)`` samples; the blend has ``sum(len_k)`` positions; a sample id
    ``j > len_k`` of a dataset reads ``j % len_k`` (its ``IndexError`` retry).
megatron-core
    ``w = normalize(x)``; dataset ``k`` is built for ``ceil(ceil(N * w_k) * 1.005)`` samples and
    the blend has ``sum(ceil(N * w_k))`` positions (without weights: one epoch per dataset,
    weights from their lengths, ``min(N, sum(len_k))`` positions); the blending arrays are cached
    (:mod:`pipeline.tokens.blend_cache`).

Arrays of the blend's length are held (as the frameworks do); windows are gathered per chunk,
grouped by dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.tokens.sample_order import CONVENTION_NAMES, OrderSource, SampleOrder, WindowPlan

DETAIL_KEYS = ("doc_index_f", "doc_index_l", "offset_f", "offset_l")


@dataclass(frozen=True)
class BlendComponent:
    """One dataset of the blend: its prefix, data, own order and what it was asked for."""

    prefix: str
    dataset: IndexedDataset
    order: SampleOrder
    weight: float  # the normalised weight the blending loop used
    num_samples: int | None  # samples it was built for (None: one epoch)
    documents: int  # documents (sequences) of the split it orders

    @property
    def epochs(self) -> int:
        """Passes over the split's documents in its order."""
        return int(-(-len(self.order.doc_idx) // max(self.documents, 1)))


@dataclass
class BlendSource:
    """What was done: each dataset's order (loaded or built) and the blending arrays."""

    convention: str
    components: list[OrderSource]
    blend_files: tuple[str, ...] = ()
    blend_loaded: bool = False
    pending: tuple[Any, tuple] | None = None

    def save(self) -> None:
        """Write every built order's files, then the blend's (if that is still to do)."""
        for source in self.components:
            source.save()
        if self.pending is not None:
            function, args = self.pending
            self.pending = None
            function(*args)

    def describe(self) -> str:
        """Lines for stderr (joined by newlines, each after the caller's ``dexport:``)."""
        lines = [source.describe() for source in self.components]
        name = CONVENTION_NAMES[self.convention]
        if self.blend_loaded:
            lines.append(f"blending index loaded from {self.blend_files[0]} (and its .npy files)")
        elif self.blend_files:
            lines.append(
                f"blending index built as {name} builds it and saved to {self.blend_files[0]}"
            )
        else:
            lines.append(f"blending index built as {name} builds it")
        return "\ndexport: ".join(lines)


@dataclass
class BlendOrder:
    """The blended sample order of one split (duck-types :class:`SampleOrder` for readers)."""

    convention: str
    components: list[BlendComponent]
    dataset_index: np.ndarray
    dataset_sample_index: np.ndarray
    source: BlendSource | None = field(default=None, repr=False)

    @property
    def seq_len(self) -> int:
        """The training sequence length (every dataset's)."""
        return self.components[0].order.seq_len

    @property
    def window_len(self) -> int:
        """Tokens per window."""
        return self.components[0].order.window_len

    @property
    def prefixes(self) -> list[str]:
        """The datasets' prefixes, in blend order."""
        return [c.prefix for c in self.components]

    def __len__(self) -> int:
        return int(len(self.dataset_index))

    def check_ids(self, ids: np.ndarray, what: str = "sample") -> np.ndarray:
        """``ids`` as int64, or a UserError naming the first one outside the blend."""
        ids = np.asarray(ids, np.int64)
        n = len(self)
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise UserError(
                f"{what} {int(ids[bad][0])} is out of range: this blend has {n} samples "
                f"(0..{n - 1}); choose ids below {n}"
            )
        return ids

    def counts(self) -> np.ndarray:
        """Positions of the blend that read each dataset."""
        return np.bincount(self.dataset_index.astype(np.int64), minlength=len(self.components))

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset, sample id asked of it)`` of each blend position in ``ids``."""
        ids = np.asarray(ids, np.int64)
        return self.dataset_index[ids].astype(np.int64), self.dataset_sample_index[ids]

    def groups(self, ids: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(dataset k, positions in ids, sample ids read from k)``, one per dataset used."""
        which, asked = self.locate(ids)
        for k in np.unique(which).tolist():
            positions = np.flatnonzero(which == k)
            yield k, positions, self._read_ids(k, asked[positions])

    def _read_ids(self, k: int, asked: np.ndarray) -> np.ndarray:
        order = self.components[k].order
        if self.convention == "neox":
            # GPT2Dataset: shuffle_idx[j] raises IndexError past its end and __getitem__
            # retries j % len; j == len reads the one shuffled sample otherwise never read.
            n = len(order)
            return np.where(asked >= len(order.shuffle_idx), asked % max(n, 1), asked)
        return asked

    def plan(self, ids: np.ndarray) -> list[tuple[int, np.ndarray, WindowPlan]]:
        """Per dataset used by ``ids``: ``(k, positions in ids, its window plan)``."""
        pieces = []
        for k, positions, read in self.groups(ids):
            comp = self.components[k]
            plan = comp.order.plan_windows(comp.dataset.token_starts, comp.dataset.sizes, read)
            pieces.append((k, positions, plan))
        return pieces

    def windows(self, dataset: Any, ids: np.ndarray) -> np.ndarray:
        """Token windows of blend positions ``ids``, int64 ``[len(ids), window_len]``
        (``dataset`` is ignored: each window is read from its own dataset)."""
        del dataset
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.window_len), np.int64)
        for k, positions, plan in self.plan(ids):
            out[positions] = plan.gather(self.components[k].dataset)
        return out

    def doc_details(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Doc details of each window in its own dataset's documents."""
        ids = np.asarray(ids, np.int64)
        out = {k: np.zeros(len(ids), np.int64) for k in DETAIL_KEYS}
        for k, positions, read in self.groups(ids):
            details = self.components[k].order.doc_details(read)
            for key, values in details.items():
                out[key][positions] = values
        return out

    def provenance(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dataset prefix, dataset_sample_id)`` per record: the prefix as given, and the
        sample id the framework asked of that dataset."""
        which, asked = self.locate(ids)
        names = np.array(self.prefixes, dtype=np.str_)
        return names[which], asked.astype(np.int64)
