"""Columns of a token export chunk, and their encodings as JSONL, CSV, NPZ and Parquet.

Record fields follow TokenSmith's names (DESIGN, "Records of a token export"): ``index`` (true
sample id, or document id), ``batch_id`` (batch selections), ``content`` (text or token ids)
and ``doc_details``. Each writer takes a whole chunk as columns and writes it in one go; token
lists and text arrive as flat arrays plus offsets, so no Python object per token is made, and
rows are rendered for the whole chunk (``gpu.text_rows``), so none per record either.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np
import orjson

if TYPE_CHECKING:
    import pyarrow as pa

    from gpu.text_rows import IntList, Part

DETAIL_FIELDS = ("doc_index_f", "doc_index_l", "offset_f", "offset_l")
# A blended run's records also say where each window came from (blends only).
SOURCE_FIELDS = ("dataset", "dataset_sample_id")


@dataclass
class TokenRecords:
    """One chunk of export records as columns."""

    index: np.ndarray
    batch_id: np.ndarray | None
    tokens: np.ndarray | None  # flat token ids (content = tokens)
    token_offsets: np.ndarray | None  # [n+1]
    width: int | None  # fixed window length (windows) or None (whole documents)
    text: np.ndarray | None  # UTF-8 bytes (content = text)
    text_offsets: np.ndarray | None
    details: dict[str, np.ndarray] | None
    nested: bool = False
    metadata: dict | None = None  # NPZ carries it as a JSON string
    batch_id_last: bool = False  # TokenSmith's order: batch_id after the other columns
    dataset: np.ndarray | None = None  # blends: the prefix each window was read from (str)
    dataset_sample_id: np.ndarray | None = None  # blends: its sample id in that dataset
    # The chunk already encoded as JSONL: the detokenizer wrote each line around its text.
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def slice_rows(self, i: int) -> tuple[int, int]:
        """Byte/token offsets of record ``i``'s content."""
        offsets = self.text_offsets if self.text is not None else self.token_offsets
        return int(offsets[i]), int(offsets[i + 1])


# -- JSON and CSV rows --------------------------------------------------------------------
# Rows are rendered for a whole chunk by gpu.text_rows (integer columns in decimal, a few
# distinct strings as choices): no Python object per record. Text goes between the pieces.
def _batch_groups(batch_id: np.ndarray) -> list[tuple[int, int, int]]:
    """``(batch, start, stop)`` runs of equal batch ids (chunks hold whole batches)."""
    cut = np.flatnonzero(np.diff(batch_id)) + 1
    bounds = [0, *cut.tolist(), len(batch_id)]
    return [(int(batch_id[a]), a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _groups(rec: TokenRecords) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per record: index of its batch group if it starts one (else the number of groups),
    and 0 if it ends one (else 1); and the groups' batch ids."""
    groups = _batch_groups(rec.batch_id)
    n = len(rec)
    lead = np.full(n, len(groups), dtype=np.int64)
    tail = np.ones(n, dtype=np.int64)
    for k, (_, lo, hi) in enumerate(groups):
        lead[lo] = k
        tail[hi - 1] = 0
    return lead, tail, [b for b, _, _ in groups]


def _json_parts(rec: TokenRecords) -> tuple[list[Part], list[Part]]:
    """The parts of each JSONL row before and after its content (``orjson``'s bytes)."""
    from gpu.text_rows import Choice

    with_batch = rec.batch_id is not None and not rec.nested
    before: list[Part] = []
    after: list[Part] = []
    if rec.nested:  # {"batch_id":B,"sequences":[record,record,...]}
        lead, tail, batches = _groups(rec)
        leads = [b'{"batch_id":%d,"sequences":[' % b for b in batches]
        before.append(Choice(lead, [*leads, b","]))
    before += [b'{"index":', rec.index]
    if with_batch and not rec.batch_id_last:
        before += [b',"batch_id":', rec.batch_id]
    if rec.dataset is not None:
        names, codes = np.unique(rec.dataset, return_inverse=True)
        before += [b',"dataset":', Choice(codes, [orjson.dumps(str(x)) for x in names])]
        before += [b',"dataset_sample_id":', rec.dataset_sample_id]
    before.append(b',"content":')
    if rec.details:
        for k, field in enumerate(DETAIL_FIELDS):
            after += [(b',"doc_details":{"' if k == 0 else b',"') + field.encode() + b'":']
            after.append(rec.details[field])
        after.append(b"}")
    if with_batch and rec.batch_id_last:
        after += [b',"batch_id":', rec.batch_id]
    after.append(b"}")
    after.append(Choice(tail, [b"]}\n", b""]) if rec.nested else b"\n")
    return before, after


def json_frames(rec: TokenRecords) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``(before, after)``: each JSONL row around its content's JSON literal, as byte columns
    (what the detokenizer writes around each window's text)."""
    from gpu.text_rows import render_rows

    before, after = _json_parts(rec)
    n = len(rec)
    return render_rows(n, before), render_rows(n, after)


def _token_lists(rec: TokenRecords, sep: bytes) -> IntList:
    from gpu.text_rows import IntList

    offsets = rec.token_offsets
    if offsets is None:
        offsets = np.arange(len(rec) + 1, dtype=np.int64) * rec.width
    return IntList(rec.tokens, offsets, sep)


def write_jsonl(handle: IO[bytes], rec: TokenRecords, *, header: bool = True) -> None:
    """One JSON object per line (one per batch, ``{"batch_id", "sequences"}``, when nested)."""
    del header
    n = len(rec)
    if rec.lines is not None:
        handle.write(memoryview(rec.lines))
        return
    if n == 0:
        return
    if rec.text is not None:
        from gpu.text_escape import framed_column

        data, _ = framed_column(rec.text, rec.text_offsets, json_frames(rec), json=True)
    else:
        from gpu.text_rows import render_rows

        before, after = _json_parts(rec)
        data, _ = render_rows(n, [*before, _token_lists(rec, b","), *after])
    handle.write(memoryview(data))


def csv_columns(rec: TokenRecords) -> list[str]:
    """CSV header: ``index,content[,batch_id][,dataset,dataset_sample_id]``
    ``[,doc_index_f,doc_index_l,offset_f,offset_l]``."""
    cols = ["index", "content"]
    if rec.batch_id is not None and not rec.batch_id_last:
        cols.append("batch_id")
    if rec.dataset is not None:
        cols.extend(SOURCE_FIELDS)
    if rec.details:
        cols.extend(DETAIL_FIELDS)
    if rec.batch_id is not None and rec.batch_id_last:
        cols.append("batch_id")
    return cols


def write_csv(handle: IO[bytes], rec: TokenRecords, *, header: bool = True) -> None:
    """CSV rows (``\\r\\n`` line ends and quoting as Python's csv module writes them)."""
    from gpu.text_rows import Choice, Column, render_rows

    n = len(rec)
    if rec.text is not None:
        from gpu.text_escape import csv_field_column

        content: Part = Column(*csv_field_column(rec.text, rec.text_offsets))
    else:  # TokenSmith writes token lists as "[1, 2, 3]" in CSV
        content = Column(*render_rows(n, [b'"', _token_lists(rec, b", "), b'"']))
    parts: list[Part] = [rec.index, b",", content]
    if rec.batch_id is not None and not rec.batch_id_last:
        parts += [b",", rec.batch_id]
    if rec.dataset is not None:
        names, codes = np.unique(rec.dataset, return_inverse=True)
        parts += [b",", Choice(codes, [_csv_text(str(x)) for x in names])]
        parts += [b",", rec.dataset_sample_id]
    if rec.details:
        for field in DETAIL_FIELDS:
            parts += [b",", rec.details[field]]
    if rec.batch_id is not None and rec.batch_id_last:
        parts += [b",", rec.batch_id]
    parts.append(b"\r\n")
    if header:
        handle.write(",".join(csv_columns(rec)).encode() + b"\r\n")
    if n:
        handle.write(memoryview(render_rows(n, parts)[0]))


def _csv_text(value: str) -> bytes:
    """A text field as Python's csv module quotes it (minimal quoting)."""
    if any(c in value for c in ',"\r\n'):
        return b'"' + value.replace('"', '""').encode() + b'"'
    return value.encode()


# -- NPZ -----------------------------------------------------------------------------------
def npz_arrays(rec: TokenRecords, metadata: dict) -> dict[str, np.ndarray]:
    """The arrays of an NPZ part (DESIGN: 2-D ``tokens`` or flat ``tokens`` + ``offsets``)."""
    arrays: dict[str, np.ndarray] = {"index": rec.index.astype(np.int64)}
    if rec.batch_id is not None:
        arrays["batch_id"] = rec.batch_id.astype(np.int64)
    if rec.dataset is not None:  # a fixed-width str array: loads without pickle
        arrays["dataset"] = np.asarray(rec.dataset, np.str_)
        arrays["dataset_sample_id"] = rec.dataset_sample_id.astype(np.int64)
    if rec.text is not None:
        arrays["text_bytes"] = np.asarray(rec.text, np.uint8)
        arrays["text_offsets"] = rec.text_offsets.astype(np.int64)
    elif rec.width is not None:
        arrays["tokens"] = rec.tokens.reshape(len(rec), rec.width)
    else:
        arrays["tokens"] = rec.tokens
        arrays["offsets"] = rec.token_offsets.astype(np.int64)
    if rec.details:
        for k in DETAIL_FIELDS:
            arrays[k] = rec.details[k].astype(np.int64)
    arrays["metadata"] = np.array(json.dumps(metadata, sort_keys=True))
    return arrays


def write_npz_arrays(handle: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed NPZ with fixed timestamps (``numpy.savez`` embeds the current time)."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(
                    member, np.require(arr, requirements="C"), allow_pickle=False
                )


# -- Parquet -------------------------------------------------------------------------------
def arrow_table(rec: TokenRecords) -> pa.Table:
    """The records as an Arrow table (nested: one row per batch with a list of sequences)."""
    import pyarrow as pa

    n = len(rec)
    if rec.text is not None:
        content = _arrow_strings(rec.text, rec.text_offsets)
    else:
        offsets = (
            rec.token_offsets if rec.width is None else np.arange(n + 1, dtype=np.int64) * rec.width
        )
        content = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(rec.tokens))
    fields = {"index": pa.array(rec.index, pa.int64())}
    if rec.batch_id is not None and not rec.nested:
        fields["batch_id"] = pa.array(rec.batch_id, pa.int64())
    if rec.dataset is not None:
        fields["dataset"] = pa.array(rec.dataset.tolist(), pa.string())
        fields["dataset_sample_id"] = pa.array(rec.dataset_sample_id, pa.int64())
    fields["content"] = content
    if rec.details:
        fields["doc_details"] = pa.StructArray.from_arrays(
            [pa.array(rec.details[k], pa.int64()) for k in DETAIL_FIELDS], list(DETAIL_FIELDS)
        )
    if not rec.nested:
        return pa.table(fields)
    groups = _batch_groups(rec.batch_id)
    seq = pa.StructArray.from_arrays(list(fields.values()), list(fields))
    offsets = pa.array([lo for _, lo, _ in groups] + [n], pa.int32())
    return pa.table(
        {
            "batch_id": pa.array([b for b, _, _ in groups], pa.int64()),
            "sequences": pa.ListArray.from_arrays(offsets, seq),
        }
    )


def _arrow_strings(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    from gpu.text_escape import arrow_string_array

    return arrow_string_array(data, offsets)


def write_parquet(handle: IO[bytes], rec: TokenRecords, *, header: bool = True) -> None:
    """One Parquet file per part (zstd-compressed columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    del header
    sink = pa.BufferOutputStream()  # pyarrow wants a seekable-looking file; parts are bounded
    pq.write_table(arrow_table(rec), sink, compression="zstd")
    handle.write(sink.getvalue())
