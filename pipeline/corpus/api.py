"""Python API of the corpus export.

    from pipeline import export_corpus

    summary = export_corpus(["classified/"], "export/", split="0.95,0.03,0.02", seed=42)

Every function takes ``storage_options`` for S3 (s3fs options) and raises
:class:`~pipeline.errors.UserError` for problems a user can fix.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from pipeline.corpus.splits import parse_split
from pipeline.formats.schema import Schema, load_schema

__all__ = ["export_corpus"]


def export_corpus(
    inputs: list[str] | str,
    out: str,
    *,
    schema: str | dict | Schema | None = None,
    set_values: list[str] | None = None,
    split: str = "0.95,0.03,0.02",
    seed: int = 42,
    split_key: str | None = None,
    exact_counts: bool = False,
    format: str = "jsonl",
    compression: str | None = None,
    parts: bool = False,
    tokenizer: str | None = None,
    chunk_size: int = 64 << 20,
    overwrite: bool = False,
    resume: bool = False,
    card: bool = True,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    workers: int | None = None,
    progress: bool = False,
    command: str | None = None,
    max_reject_fraction: float | None = 0.5,
    table: str | None = None,
    query: str | None = None,
    key: str | None = None,
    backend: str = "cpu",
    incremental: bool = False,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Export curated records as train/validation/test files with statistics and a card.

    ``inputs`` are JSONL/Parquet files, folders or globs, or one database URL
    (``sqlite:///games.db``, ``postgresql://user:pw@host/db``) with ``table`` or ``query`` and
    ``key``, a unique column that orders the records and cuts them into partitions.

    ``schema`` is a schema file (YAML/JSON), a dict in the same layout, a :class:`Schema`, or
    None for the training schema; ``set_values`` adds static fields (``metadata.source=web``).
    ``split`` takes ratios (``0.95,0.03,0.02`` or ``train=0.95,...``) or, with
    ``exact_counts``, counts (``train=rest,validation=500,test=500``). Without ``client`` (or
    ``workers``) the job runs on processes forked from this one. Returns the run summary.

    Raises :class:`~pipeline.errors.DataCheckFailed` (after writing the export, with the
    summary as ``.summary``) when every record, or more than ``max_reject_fraction`` of them,
    was rejected; ``None`` checks only "every record". ``backend`` (``cpu``, ``gpu`` or
    ``auto``) is what the partitions compute with; the output bytes are the same.

    ``incremental=True`` adds only input files the output has not consumed yet, as a new
    generation (``summary["up_to_date"]`` when there is none; nothing is written then);
    ``rebuild=True`` exports every input again (after an input changed or went away).
    """
    from pipeline.corpus.job import CorpusExport, plan_corpus_export, run_corpus_export
    from pipeline.io.sql import database_source
    from pipeline.runtime.executor import plan_and_open_executor

    options = dict(storage_options or {})
    names = (
        [os.fspath(inputs)]
        if isinstance(inputs, str | os.PathLike)
        else [os.fspath(i) for i in inputs]
    )
    database = database_source(names, table=table, query=query, key=key)
    spec = CorpusExport(
        inputs=[database.masked_url] if database is not None else names,
        out=os.fspath(out),
        schema=_schema(schema, options, set_values or []),
        split=parse_split(split, seed=seed, key=split_key, exact=exact_counts),
        format=format,
        compression=compression,
        parts=parts,
        tokenizer=tokenizer,
        chunk_size=chunk_size,
        overwrite=overwrite,
        resume=resume,
        storage_options=options,
        card=card,
        command=command,
        max_reject_fraction=max_reject_fraction,
        database=database,
        backend=backend,
        incremental=incremental,
        rebuild=rebuild,
    )
    with plan_and_open_executor(  # with workers=: the cluster starts while the export plans
        lambda: plan_corpus_export(spec),
        lambda plan: len(plan.partitions),
        client=client,
        workers=workers,
        backend=backend,
        in_process=True,
        processes=True,
    ) as (plan, executor):
        return run_corpus_export(plan, executor, progress=progress)


def _schema(schema: str | dict | Schema | None, options: dict, assignments: list[str]) -> Schema:
    if isinstance(schema, Schema):
        return schema.with_static(assignments) if assignments else schema
    if isinstance(schema, dict):
        from pipeline.formats.schema import parse_schema

        parsed = parse_schema(orjson.dumps(schema).decode(), "schema")
        return parsed.with_static(assignments) if assignments else parsed
    return load_schema(None if schema is None else os.fspath(schema), options, assignments)
