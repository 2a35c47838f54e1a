"""Python API of the checks on finished exports: validate, recompute statistics, summary.

    from pipeline import validate_export, corpus_stats

    assert validate_export("export/").passed
    stats = corpus_stats("export/")

Every function takes ``storage_options`` for S3 (s3fs options) and raises
:class:`~pipeline.errors.UserError` for problems a user can fix.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from pipeline.errors import UserError
from pipeline.formats.corpus_stats import SplitStats, dataset_stats, words_and_bytes
from pipeline.formats.exports import Digest, hash_file, iter_lines, open_export
from pipeline.formats.schema import Schema
from pipeline.validate.export import ValidationReport, validate_export

__all__ = ["validate_export", "corpus_stats", "pipeline_summary", "ValidationReport"]


def corpus_stats(
    url: str, storage_options: dict[str, Any] | None = None, *, tokenizer: str | None = None
) -> dict[str, Any]:
    """Recompute ``dataset_stats.json`` from the files of a corpus export (one streaming read)."""
    export = open_export(url, storage_options)
    if export.kind != "corpus":
        raise UserError(f"{url} is a token export; dexport stats works on corpus exports")
    params = (export.manifest or {}).get("parameters") or {}
    schema = Schema.from_dict(params["schema"]) if params.get("schema") else Schema()
    backend = None
    if tokenizer:
        from pipeline.formats.tokenizer import counter_backend, load_token_counter

        backend = counter_backend(load_token_counter(tokenizer))
    by_split = {name: SplitStats() for name in export.groups}
    invalid = 0
    for name, files in export.groups.items():
        for rel in files:
            for batch in _record_batches(export, rel):
                texts, records = [], []
                for rec in batch:
                    text = _at(rec, schema.text)
                    if isinstance(text, str):
                        texts.append(text)
                        records.append(rec)
                    else:
                        invalid += 1
                words, nbytes = words_and_bytes(texts)
                tokens = (
                    sum(len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=False))
                    if backend and texts
                    else (0 if backend else None)
                )
                domains = (
                    [_at(r, schema.domain_field) for r in records] if schema.domain_field else []
                )
                scores = (
                    [_at(r, schema.quality_field) for r in records] if schema.quality_field else []
                )
                by_split[name].add([len(t) for t in texts], nbytes, words, domains, scores, tokens)
    rejected = _count_rejects(export)
    exported = sum(s.count for s in by_split.values())
    totals = (export.manifest or {}).get("totals") or {}
    accounting = {
        "input_lines": totals.get("input_lines"),
        "blank_lines": totals.get("blank_lines"),
        "exported": exported,
        "rejected": sum(rejected.values()),
    }
    if accounting["input_lines"] is not None:
        accounting["balanced"] = (
            accounting["input_lines"]
            == (accounting["blank_lines"] or 0) + exported + accounting["rejected"]
        )
    extra = {
        "split": params.get("split"),
        "format": params.get("format"),
        "compression": params.get("compression"),
        "recomputed": True,
    }
    if invalid:
        extra["records_without_text"] = invalid
    return dataset_stats(by_split, rejected, accounting, extra)


def _at(record: Any, path: str | None) -> Any:
    value = record
    for key in (path or "").split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _record_batches(export: Any, rel: str, size: int = 4096):
    path = export.file(rel)
    if rel.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        data = hash_file(export.fs, path, Digest())
        for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=size):
            yield batch.to_pylist()
        return
    batch = []
    for _, line in iter_lines(export.fs, path, Digest()):
        if line.strip():
            try:
                batch.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                batch.append(None)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_rejects(export: Any) -> Counter:
    counts: Counter = Counter()
    if export.single_file:
        return counts
    base = f"{export.path.rstrip('/')}/rejects"
    if not export.fs.isdir(base):
        return counts
    for path in sorted(export.fs.find(base, withdirs=False)):
        for _, line in iter_lines(export.fs, path, Digest()):
            if line.strip():
                counts[orjson.loads(line).get("reason", "unknown")] += 1
    return counts


def pipeline_summary(
    dirs: list[str], storage_options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Documents per stage folder and the reduction from the previous stage."""
    from pipeline.io.records import list_input_files
    from pipeline.io.storage import resolve

    rows: list[dict[str, Any]] = []
    for d in dirs:
        fs, path = resolve(d, storage_options)
        stats_path = f"{path.rstrip('/')}/dataset_stats.json"
        if fs.isdir(path) and fs.exists(stats_path):
            docs = int(orjson.loads(fs.cat_file(stats_path))["total_documents"])
        else:
            docs = sum(
                _count_documents(f_fs, f_path)
                for f_fs, f_path, _ in list_input_files([d], storage_options)
            )
        prev = rows[-1]["documents"] if rows else None
        reduction = None if not prev else round(100 * (prev - docs) / prev, 1)
        rows.append(
            {
                "stage": d.rstrip("/").rsplit("/", 1)[-1],
                "path": d,
                "documents": docs,
                "reduction_pct": reduction,
            }
        )
    return rows


def _count_documents(fs: Any, path: str) -> int:
    if path.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    return sum(1 for _, line in iter_lines(fs, path, Digest()) if line.strip())
