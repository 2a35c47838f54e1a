"""Python API of ``dexport encode``: a curated corpus -> a tokenized Megatron dataset.

Example::

    from pipeline.encode.api import encode_corpus

    summary = encode_corpus(["corpus/train.jsonl"], "data/train_text_document",
                            tokenizer="tokenizers/gpt2", append_eod=True)
    summary["documents"], summary["tokens"], summary["dtype"]

The result is read by megatron-core's ``IndexedDataset("data/train_text_document")``, by
GPT-NeoX, and by ``dexport tokens`` / ``dexport inspect``.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.encode.job import EncodeJob, run_encode


def encode_corpus(
    inputs: str | os.PathLike[str] | list[str | os.PathLike[str]],
    out_prefix: str | os.PathLike[str],
    *,
    tokenizer: Any,
    field: str = "text",
    append_eod: bool = False,
    add_bos: bool = False,
    eod_id: int | None = None,
    bos_id: int | None = None,
    format: str = "megatron",
    partition_bytes: int = 64 << 20,
    overwrite: bool = False,
    resume: bool = False,
    storage_options: dict[str, Any] | None = None,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    max_reject_fraction: float | None = 0.5,
    table: str | None = None,
    query: str | None = None,
    key: str | None = None,
    backend: str = "cpu",
    incremental: bool = False,
    rebuild: bool = False,
) -> dict[str, Any]:
    """Tokenize JSONL/Parquet inputs (files, folders, globs, corpus exports; local or S3) or
    the rows of a database table or query.

    Args:
        inputs: one input or a list of them, read in partitions of ``partition_bytes``; or one
            database URL (``sqlite:///games.db``, ``postgresql://user:pw@host/db``) with
            ``table`` or ``query`` and ``key`` (a unique column: record order and partitions).
        out_prefix: dataset prefix (``data/ds`` -> ``data/ds.bin`` + ``data/ds.idx``), or the
            output directory for ``format="npz"``.
        tokenizer: a local Hugging Face tokenizer folder, a ``tokenizer.json`` file, or a
            loaded fast tokenizer.
        field: record field holding the text; records where it is missing, not a string or
            blank go to the rejects file with the reason.
        append_eod: append the end-of-document token (``eod_id``, default the tokenizer's
            ``eos_token_id``) to every document, as Megatron's ``--append-eod``.
        add_bos: start every document with BOS (``bos_id``, default ``bos_token_id``) unless
            the tokenizer already adds it.
        format: ``"megatron"`` (one merged ``.bin``/``.idx``) or ``"npz"`` (one NPZ shard per
            partition with flat ``tokens`` and ``offsets``).
        overwrite / resume: replace an existing output / finish an interrupted run.
        incremental: append only input files the dataset has not consumed yet (a new
            generation; old document ids never change); with nothing new the summary has
            ``up_to_date=True`` and nothing is written. ``rebuild`` encodes every input again
            (needed after an input changed or went away).
        storage_options: fsspec/s3fs options for inputs and output.
        client: an existing ``distributed.Client`` (left open); else ``scheduler`` or an
            embedded local cluster of ``workers`` processes; by default threads of this process.
        progress: show a progress bar on a terminal.
        backend: ``"cpu"``, ``"gpu"`` or ``"auto"``: what packs the shards (tokenization
            stays on the CPU; the output bytes are the same).

    Returns:
        The summary: ``documents``, ``tokens``, ``records``, ``rejected`` (by reason),
        ``dtype``, ``tokenizer`` (name, vocab_size, …), ``out``, ``manifest``, ``seconds``,
        ``tokens_per_s``.

    Raises:
        pipeline.errors.UserError: invalid arguments, missing input or tokenizer, existing
            output without ``overwrite``/``resume``; nothing is written in that case.
        pipeline.errors.DataCheckFailed: every record, or more than ``max_reject_fraction`` of
            them (None: only "every record"), was rejected; raised after the dataset is written,
            with the summary as ``.summary``.
    """
    from pipeline.io.sql import database_source
    from pipeline.runtime.executor import plan_and_open_executor

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    names = [os.fspath(i) for i in inputs]
    database = database_source(names, table=table, query=query, key=key)
    job = EncodeJob(
        inputs=[database.masked_url] if database is not None else names,
        out=os.fspath(out_prefix),
        tokenizer=os.fspath(tokenizer) if isinstance(tokenizer, os.PathLike) else tokenizer,
        field=field,
        append_eod=append_eod,
        add_bos=add_bos,
        eod_id=eod_id,
        bos_id=bos_id,
        format=format,
        partition_bytes=partition_bytes,
        overwrite=overwrite,
        resume=resume,
        storage_options=dict(storage_options or {}),
        max_reject_fraction=max_reject_fraction,
        database=database,
        backend=backend,
        incremental=incremental,
        rebuild=rebuild,
    )

    def checked() -> EncodeJob:
        job.check()  # inputs, output, tokenizer: nothing is written when this fails
        return job

    # With scheduler= or workers=, the cluster starts (or connects) while the job is checked.
    with plan_and_open_executor(
        checked,
        lambda planned: len(planned.partitions or ()),
        client=client,
        scheduler=scheduler,
        workers=workers,
        backend=backend,
        in_process=True,
    ) as (planned, executor):
        return run_encode(planned, executor, progress=progress)
