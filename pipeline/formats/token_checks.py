"""Record checks for token exports (DESIGN, "Records of a token export").

- JSONL: ``{"index", "batch_id"?, "content", "doc_details"?}`` per line, or nested batches
  ``{"batch_id", "sequences": [record, ...]}``.
- CSV: header ``index,content[,batch_id][,dataset,dataset_sample_id]``
  ``[,doc_index_f,doc_index_l,offset_f,offset_l]`` (``batch_id`` last in API exports); token
  lists written as ``"[1, 2, 3]"``; ``content`` and ``dataset`` are text, the rest integers.
- NPZ: ``index`` (1-D) and ``tokens`` (2-D, or flat with ``offsets`` of length n+1) or
  ``text_bytes`` + ``text_offsets``; ``batch_id`` / doc-detail columns as 1-D arrays of length
  n; ``metadata`` a JSON string; loadable with ``allow_pickle=False``.
- Parquet: the JSONL fields as columns (nested: ``batch_id`` + ``sequences``).

``content`` length (characters of text, or number of tokens) feeds the length statistics.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import orjson

from pipeline.formats.exports import Digest, Export, hash_file, iter_lines

DETAILS = ("doc_index_f", "doc_index_l", "offset_f", "offset_l")
# A blended run's records also name their dataset (text) and the sample id asked of it.
SOURCES = ("dataset", "dataset_sample_id")
CSV_TEXT = frozenset({"content", "dataset"})  # every other CSV column holds integers


def check_file(export: Export, rel: str, split: Any, digest: Digest, show: int) -> None:
    """Check every record of one token-export file into ``split`` (a SplitReport)."""
    from pipeline.formats.token_formats import format_of_file

    fmt = format_of_file(rel)
    if fmt is None:
        split.error(f"{rel}: unknown file type", show)
        return
    fmt.check(export, export.file(rel), rel, split, digest, show)


def check_npz(export: Export, path: str, rel: str, split: Any, digest: Digest, show: int) -> None:
    """Check an NPZ part (read whole: zip members need random access)."""
    _check_npz(hash_file(export.fs, path, digest), rel, split, show)


def check_parquet(
    export: Export, path: str, rel: str, split: Any, digest: Digest, show: int
) -> None:
    """Check a Parquet part (read whole: the footer comes last)."""
    _check_parquet(hash_file(export.fs, path, digest), rel, split, show)


def record_problem(rec: Any) -> tuple[str | None, int]:
    """``(problem or None, content length)`` of one flat token record."""
    if not isinstance(rec, dict):
        return "not a JSON object", 0
    index = rec.get("index")
    if type(index) is not int or index < 0:
        return f"index must be a non-negative integer (got {index!r})", 0
    if "batch_id" in rec and rec["batch_id"] is not None and type(rec["batch_id"]) is not int:
        return f"batch_id must be an integer (got {rec['batch_id']!r})", 0
    if ("dataset" in rec or "dataset_sample_id" in rec) and not isinstance(rec.get("dataset"), str):
        return f"dataset must be the dataset's prefix as text (got {rec.get('dataset')!r})", 0
    sample_id = rec.get("dataset_sample_id", 0)
    if type(sample_id) is not int or sample_id < 0:
        return f"dataset_sample_id must be a non-negative integer (got {sample_id!r})", 0
    content = rec.get("content")
    if isinstance(content, str):
        length = len(content)
    elif isinstance(content, list) and all(type(t) is int and t >= 0 for t in content):
        length = len(content)
    else:
        return "content must be text or a list of non-negative token ids", 0
    details = rec.get("doc_details")
    if details is not None and (
        not isinstance(details, dict) or any(type(details.get(k)) is not int for k in DETAILS)
    ):
        return f"doc_details must hold integers {', '.join(DETAILS)}", 0
    return None, length


def _check_records(rows: Any, rel: str, split: Any, show: int) -> None:
    for number, rec in rows:
        if isinstance(rec, dict) and "sequences" in rec:
            if type(rec.get("batch_id")) is not int or not isinstance(rec["sequences"], list):
                split.error(
                    f"{rel}:{number}: a nested batch needs an integer batch_id and a list of "
                    "sequences",
                    show,
                )
                continue
            for seq in rec["sequences"]:
                problem, length = record_problem(seq)
                if problem:
                    split.error(f"{rel}:{number}: batch {rec['batch_id']}: {problem}", show)
                else:
                    split.length(length)
            continue
        problem, length = record_problem(rec)
        if problem:
            split.error(f"{rel}:{number}: {problem}", show)
        else:
            split.length(length)


def check_jsonl(export: Export, path: str, rel: str, split: Any, digest: Digest, show: int) -> None:
    def rows():
        for number, line in iter_lines(export.fs, path, digest):
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, f"invalid JSON ({exc})"

    _check_records(rows(), rel, split, show)


def check_csv(export: Export, path: str, rel: str, split: Any, digest: Digest, show: int) -> None:
    lines = (
        line.decode("utf-8", errors="replace") + "\n"
        for _, line in iter_lines(export.fs, path, digest)
    )
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header or header[:2] != ["index", "content"]:
        split.error(
            f"{rel}:1: the header must start with index,content (got {','.join(header or [])!r})",
            show,
        )
        return
    for number, row in enumerate(reader, start=2):
        if row == [] or row == [""]:
            continue
        if len(row) != len(header):
            split.error(f"{rel}:{number}: {len(row)} columns, the header has {len(header)}", show)
            continue
        rec: dict[str, Any] = {}
        try:
            for name, value in zip(header, row, strict=True):
                rec[name] = value if name in CSV_TEXT else int(value)
        except ValueError:
            split.error(f"{rel}:{number}: {name} must be an integer (got {value!r})", show)
            continue
        content = rec["content"]
        if content.startswith("[") and content.endswith("]"):
            try:
                rec["content"] = json.loads(content)
            except ValueError:
                pass
        if any(k in rec for k in DETAILS):
            rec["doc_details"] = {k: rec.pop(k, None) for k in DETAILS}
        _check_records([(number, rec)], rel, split, show)


def _check_npz(data: bytes, rel: str, split: Any, show: int) -> None:
    try:
        arrays = dict(np.load(io.BytesIO(data), allow_pickle=False))
    except Exception as exc:  # a corrupt or pickled NPZ: numpy raises several error types
        split.error(
            f"{rel}: not a loadable NPZ without pickles ({' '.join(str(exc).split())})", show
        )
        return
    index = arrays.get("index")
    if index is None or index.ndim != 1 or index.dtype.kind not in "iu":
        split.error(f"{rel}: 'index' must be a 1-D integer array", show)
        return
    n = len(index)
    problems = [
        f"'{k}' must be 1-D of length {n}"
        for k in ("batch_id", *SOURCES, *DETAILS)
        if k in arrays and arrays[k].shape != (n,)
    ]
    if "metadata" in arrays:
        try:
            json.loads(str(arrays["metadata"]))
        except ValueError:
            problems.append("'metadata' is not a JSON string")
    lengths = _npz_lengths(arrays, n, problems)
    for p in problems:
        split.error(f"{rel}: {p}", show)
    if not problems:
        for length in lengths:
            split.length(int(length))


def _npz_lengths(arrays: dict[str, np.ndarray], n: int, problems: list[str]) -> np.ndarray:
    if "text_bytes" in arrays:
        data, offsets = arrays["text_bytes"], arrays.get("text_offsets")
    else:
        data, offsets = arrays.get("tokens"), arrays.get("offsets")
        if data is not None and data.ndim == 2:
            if data.shape[0] != n:
                problems.append(f"'tokens' has {data.shape[0]} rows for {n} indices")
            return np.full(n, data.shape[1])
    if data is None or offsets is None:
        problems.append(
            "needs 2-D 'tokens', flat 'tokens' + 'offsets', or 'text_bytes' + 'text_offsets'"
        )
        return np.zeros(0)
    if (
        offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(data)
        or np.any(np.diff(offsets) < 0)
    ):
        problems.append(f"offsets must rise from 0 to {len(data)} with n+1 = {n + 1} entries")
        return np.zeros(0)
    if "text_bytes" in arrays:
        raw = data.tobytes()
        out = []
        for i in range(n):
            try:
                out.append(len(raw[offsets[i] : offsets[i + 1]].decode("utf-8")))
            except UnicodeDecodeError:
                problems.append(f"record {i}: text is not valid UTF-8")
                return np.zeros(0)
        return np.asarray(out)
    return np.diff(offsets)


def _check_parquet(data: bytes, rel: str, split: Any, show: int) -> None:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends for corrupt files
        split.error(f"{rel}: not a readable Parquet file ({' '.join(str(exc).split())})", show)
        return
    number = 0
    for batch in reader.iter_batches(batch_size=4096):
        rows = batch.to_pylist()
        _check_records(((number + i + 1, r) for i, r in enumerate(rows)), rel, split, show)
        number += len(rows)
