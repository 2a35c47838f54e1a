"""Columns of a token export chunk, and their encodings as JSONL, CSV, NPZ and Parquet.

Record fields follow TokenSmith's names (DESIGN, "Records of a token export"): ``index`` (true
sample id, or document id), ``batch_id`` (batch selections), ``content`` (text or token ids)
and ``doc_details``. Each writer takes a whole chunk as columns and writes it in one go; token
lists and text arrive as flat arrays plus offsets, so no Python object per token is made.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np
import orjson

if TYPE_CHECKING:
    import pyarrow as pa

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

    def __len__(self) -> int:
        return len(self.index)

    def slice_rows(self, i: int) -> tuple[int, int]:
        """Byte/token offsets of record ``i``'s content."""
        offsets = self.text_offsets if self.text is not None else self.token_offsets
        return int(offsets[i]), int(offsets[i + 1])


# -- JSON ----------------------------------------------------------------------------------
def _content_fragments(rec: TokenRecords, *, csv: bool = False) -> list[bytes]:
    """Each record's content as its encoded bytes (JSON text goes through ``write_jsonl``)."""
    n = len(rec)
    if rec.text is not None:
        from gpu.text_escape import csv_field_column

        assert csv, "JSON text is framed by write_jsonl"
        data, offsets = csv_field_column(rec.text, rec.text_offsets)
        return [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(n)]
    off = rec.token_offsets
    tokens = rec.tokens
    frags = [
        orjson.dumps(tokens[off[i] : off[i + 1]], option=orjson.OPT_SERIALIZE_NUMPY)
        for i in range(n)
    ]
    if csv:  # TokenSmith writes token lists as "[1, 2, 3]" in CSV
        frags = [b'"' + f.replace(b",", b", ") + b'"' for f in frags]
    return frags


def _record_dicts(rec: TokenRecords, content: list, *, with_batch: bool) -> list[dict]:
    index = rec.index.tolist()
    batch = rec.batch_id.tolist() if rec.batch_id is not None and with_batch else None
    details = {k: rec.details[k].tolist() for k in DETAIL_FIELDS} if rec.details else None
    sources = _sources(rec)
    out = []
    for i in range(len(rec)):
        row: dict = {"index": index[i]}
        if batch is not None and not rec.batch_id_last:
            row["batch_id"] = batch[i]
        if sources is not None:
            row["dataset"], row["dataset_sample_id"] = sources[0][i], sources[1][i]
        row["content"] = content[i]
        if details is not None:
            row["doc_details"] = {k: details[k][i] for k in DETAIL_FIELDS}
        if batch is not None and rec.batch_id_last:
            row["batch_id"] = batch[i]
        out.append(row)
    return out


def _sources(rec: TokenRecords) -> tuple[list, list] | None:
    if rec.dataset is None:
        return None
    return rec.dataset.tolist(), rec.dataset_sample_id.tolist()


def _batch_groups(batch_id: np.ndarray) -> list[tuple[int, int, int]]:
    """``(batch, start, stop)`` runs of equal batch ids (chunks hold whole batches)."""
    cut = np.flatnonzero(np.diff(batch_id)) + 1
    bounds = [0, *cut.tolist(), len(batch_id)]
    return [(int(batch_id[a]), a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# Text content is left out of the Python objects: each record holds this slot, the lines are
# cut at the slots, and one kernel writes the escaped text between the pieces.
_CONTENT_KEY = b'"content":'
_SLOT = orjson.Fragment(b"0")


def _byte_column(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8), offsets


def write_jsonl(handle: IO[bytes], rec: TokenRecords, *, header: bool = True) -> None:
    """One JSON object per line (one per batch, ``{"batch_id", "sequences"}``, when nested)."""
    del header
    n = len(rec)
    if n == 0:
        return
    text = rec.text is not None
    content = [_SLOT] * n if text else list(map(orjson.Fragment, _content_fragments(rec)))
    rows = _record_dicts(rec, content, with_batch=not rec.nested)
    if rec.nested:
        lines = [
            orjson.dumps({"batch_id": b, "sequences": rows[lo:hi]})
            for b, lo, hi in _batch_groups(rec.batch_id)
        ]
    else:
        lines = [orjson.dumps(r) for r in rows]
    blob = b"\n".join(lines) + b"\n"
    if not text:
        handle.write(blob)
        return
    # The key cannot occur elsewhere: inside a JSON string its quotes would be escaped.
    pieces = blob.split(_CONTENT_KEY + b"0")
    before = [piece + _CONTENT_KEY for piece in pieces[:-1]]
    after = [b""] * (n - 1) + [pieces[-1]]
    from gpu.text_escape import json_framed_column

    data, _ = json_framed_column(
        rec.text, rec.text_offsets, _byte_column(before), _byte_column(after)
    )
    handle.write(memoryview(data))


# -- CSV -----------------------------------------------------------------------------------
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
    frags = _content_fragments(rec, csv=True)
    tails = [[str(x).encode() for x in rec.index.tolist()]]
    extra: list[list[bytes]] = []
    batch = [str(x).encode() for x in rec.batch_id.tolist()] if rec.batch_id is not None else None
    if batch is not None and not rec.batch_id_last:
        extra.append(batch)
    if rec.dataset is not None:
        names, ids = _sources(rec)
        extra.append([_csv_text(name) for name in names])
        extra.append([str(x).encode() for x in ids])
    if rec.details:
        extra.extend([str(x).encode() for x in rec.details[k].tolist()] for k in DETAIL_FIELDS)
    if batch is not None and rec.batch_id_last:
        extra.append(batch)
    out = io.BytesIO()
    if header:
        out.write(",".join(csv_columns(rec)).encode() + b"\r\n")
    for i in range(len(rec)):
        out.write(b",".join([tails[0][i], frags[i], *(col[i] for col in extra)]) + b"\r\n")
    handle.write(out.getbuffer())


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
