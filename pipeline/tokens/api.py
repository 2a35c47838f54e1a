"""Python API: a drop-in for TokenSmith's ``DatasetManager`` on dexport's parallel engine.

    from pipeline import DatasetManager  # was: from tokensmith.manager import DatasetManager
    manager = DatasetManager()
    manager.setup_edit_inspect_sample_export("data/ds", "data/index/ds", train_iters=1000,
                                             train_batch_size=32, train_seq_len=2048, seed=1234)
    manager.export.export_batch_range(5000, 5010, 32, "out/batches.jsonl", tokenizer=tok)

Same method names, argument names and defaults as TokenSmith; the exports run as chunked tasks
in this process's threads, or on a Dask cluster when ``client=``, ``scheduler=`` or ``workers=``
is given.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.formats.token_formats import FORMATS
from pipeline.tokens.job import TokenExport, prepare_token_export, run_token_export
from pipeline.tokens.sample_order import SampleOrder
from pipeline.tokens.source import TrainingRun, open_sample_order


class DatasetManager:
    """Entry point: set up once, then use ``.export``, ``.sample`` and ``.inspect``."""

    def __init__(
        self,
        *,
        client: Any = None,
        scheduler: str | None = None,
        workers: int | None = None,
        storage_options: dict | None = None,
    ) -> None:
        self._client = client
        self._scheduler = scheduler
        self._workers = workers
        self._executor_cm: contextlib.AbstractContextManager | None = None
        self._executor: Any = None
        self.storage_options = dict(storage_options or {})
        self.dataset: IndexedDataset | None = None
        self.run: TrainingRun | None = None
        self.order: SampleOrder | None = None
        self.export: ExportHandler | None = None
        self.sample: SampleHandler | None = None
        self.inspect: InspectHandler | None = None
        self._tokenizer_dirs: dict[int, str] = {}

    def setup_edit_inspect_sample_export(
        self,
        dataset_prefix: str,
        batch_info_save_prefix: str,
        train_iters: int,
        train_batch_size: int,
        train_seq_len: int,
        seed: int,
        splits_string: str = "969,30,1",
        packing_impl: str = "packed",
        allow_chopped: bool = True,
        add_extra_token_to_seq: int = 1,
        *,
        convention: str = "neox",
        split: str = "train",
    ) -> None:
        """Open the dataset and load (or build and cache) the training run's sample order."""
        if self.export is not None:
            raise UserError("handlers already initialized; create a new DatasetManager")
        if add_extra_token_to_seq not in (0, 1):
            raise UserError("add_extra_token_to_seq must be 0 or 1")
        if convention == "neox" and add_extra_token_to_seq != 1:
            raise UserError(
                "GPT-NeoX runs always add one extra token; "
                "use convention='megatron' for add_extra_token_to_seq=0"
            )
        self.dataset = IndexedDataset(dataset_prefix, self.storage_options)
        self.run = TrainingRun(
            seq_len=train_seq_len,
            seed=seed,
            convention=convention,
            train_iters=train_iters,
            batch_size=train_batch_size,
            splits=splits_string,
            split=split,
            packing=packing_impl,
            allow_chopped=allow_chopped,
            extra_token=bool(add_extra_token_to_seq),
            index_prefix=batch_info_save_prefix,
            storage_options=self.storage_options,
        )
        self.order = open_sample_order(self.dataset, self.run)
        self.export = ExportHandler(self)
        self.sample = SampleHandler(self)
        self.inspect = InspectHandler(self)

    # -- engine -----------------------------------------------------------------------------
    @property
    def executor(self) -> Any:
        """Where exports run: this process's threads unless a client, scheduler or workers
        was given.

        The in-process default starts no processes, so a plain script without an
        ``if __name__ == "__main__":`` guard, a notebook or ``python -c`` never hangs.
        """
        if self._executor is None:
            from pipeline.runtime.executor import open_executor

            self._executor_cm = open_executor(
                client=self._client,
                scheduler=self._scheduler,
                workers=self._workers,
                in_process=True,
            )
            self._executor = self._executor_cm.__enter__()
            atexit.register(self.close)
        return self._executor

    def close(self) -> None:
        """Release the threads or shut down the cluster this manager started (if any)."""
        if self._executor_cm is not None:
            cm, self._executor_cm, self._executor = self._executor_cm, None, None
            cm.__exit__(None, None, None)

    def __enter__(self) -> DatasetManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tokenizer_path(self, tokenizer: Any) -> str | None:
        """Workers load tokenizers by path; a tokenizer object is saved once to a temp folder."""
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            return None if tokenizer is None else os.fspath(tokenizer)
        key = id(tokenizer)
        if key not in self._tokenizer_dirs:
            folder = tempfile.mkdtemp(prefix="dexport-tokenizer-")
            tokenizer.save_pretrained(folder)
            self._tokenizer_dirs[key] = folder
        return self._tokenizer_dirs[key]

    def _ready(self) -> None:
        if self.order is None:
            raise UserError("call setup_edit_inspect_sample_export(...) first")

    def _export(
        self,
        kind: str,
        value: Any,
        output_path: str,
        format_type: str,
        return_detokenized: bool,
        tokenizer: Any,
        include_doc_details: bool,
        *,
        batch_size: int | None = None,
        nested: bool = False,
        chunk_size: int = 1000,
        overwrite: bool = True,
    ) -> dict:
        self._ready()
        if return_detokenized and tokenizer is None:
            raise UserError("tokenizer must be provided if return_detokenized is True")
        run = self.run
        if batch_size is not None and batch_size != run.batch_size:
            run = TrainingRun(**{**run.__dict__, "batch_size": batch_size})
        spec = TokenExport(
            prefix=self.dataset.prefix,
            out=os.fspath(output_path),
            selection_kind=kind,
            selection_value=value,
            run=run,
            content="text" if return_detokenized else "tokens",
            tokenizer=self._tokenizer_path(tokenizer),
            doc_details=include_doc_details,
            nested=nested,
            format=format_type,
            chunk_size=chunk_size,
            overwrite=overwrite,
            storage_options=self.storage_options,
        )
        prepared = prepare_token_export(
            spec, dataset=self.dataset, order=None if kind == "documents" else self.order
        )
        return run_token_export(prepared, self.executor, progress=False)

    def _decoded(
        self, tokens: np.ndarray, tokenizer: Any, skip_special_tokens: bool = False
    ) -> list[str]:
        from pipeline.tokens.job import _detokenizer

        detok = _detokenizer(self._tokenizer_path(tokenizer), skip_special_tokens)
        n, width = tokens.shape
        return detok.decode(tokens.reshape(-1), np.arange(n + 1, dtype=np.int64) * width)


class ExportHandler:
    """TokenSmith's six export methods (plus ``export_documents``), on the Dask engine.

    ``output_path`` naming a file with an extension (``x.jsonl``, ``x.csv.gz``, ``x.npz``,
    ``x.parquet``) gives one file; otherwise a directory of part files and ``_manifest.json``.
    Each call returns the run's summary (records, tokens, files, bytes, seconds, tokens/s).
    """

    def __init__(self, manager: DatasetManager) -> None:
        self.manager = manager

    def export_batches(
        self,
        batch_ids: list[int],
        batch_size: int,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
        flatten_batches: bool = False,
    ) -> dict:
        """Export global batches ``batch_ids`` (nested one record per batch unless flattened;
        CSV/NPZ rows are always flat)."""
        return self.manager._export(
            "batches",
            list(batch_ids),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
            batch_size=batch_size,
            nested=_nested(flatten_batches, format_type),
        )

    def export_sequences(
        self,
        sequence_indices: list[int],
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
    ) -> dict:
        """Export samples by id (training order)."""
        return self.manager._export(
            "sequences",
            list(sequence_indices),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
        )

    def export_entire_dataset(
        self,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
        chunk_size: int = 1000,
    ) -> dict:
        """Export every sample of the split."""
        return self.manager._export(
            "all",
            None,
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
            chunk_size=chunk_size,
        )

    def export_sequence_range(
        self,
        start_idx: int,
        end_idx: int,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
    ) -> dict:
        """Export samples ``[start_idx, end_idx)``."""
        return self.manager._export(
            "sequence_range",
            (start_idx, end_idx),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
        )

    def export_batch_range(
        self,
        start_batch: int,
        end_batch: int,
        batch_size: int,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
        flatten_batches: bool = False,
    ) -> dict:
        """Export batches ``[start_batch, end_batch)``."""
        return self.manager._export(
            "batch_range",
            (start_batch, end_batch),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
            batch_size=batch_size,
            nested=_nested(flatten_batches, format_type),
        )

    def export_dataset_range(
        self,
        start_idx: int,
        end_idx: int,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        include_doc_details: bool = False,
        chunk_size: int = 1000,
    ) -> dict:
        """Export samples ``[start_idx, end_idx)`` in chunks of ``chunk_size``."""
        return self.manager._export(
            "sequence_range",
            (start_idx, end_idx),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            include_doc_details,
            chunk_size=chunk_size,
        )

    def export_documents(
        self,
        start_doc: int,
        end_doc: int,
        output_path: str,
        format_type: str = "jsonl",
        return_detokenized: bool = True,
        tokenizer: Any = None,
        chunk_size: int = 1000,
    ) -> dict:
        """Export whole corpus documents ``[start_doc, end_doc)`` in corpus order."""
        return self.manager._export(
            "documents",
            (start_doc, end_doc),
            output_path,
            format_type,
            return_detokenized,
            tokenizer,
            False,
            chunk_size=chunk_size,
        )


def _nested(flatten_batches: bool, format_type: str) -> bool:
    # CSV and NPZ rows are flat by nature (each carries batch_id); nesting applies to JSONL/Parquet.
    fmt = FORMATS.get(format_type)
    return not flatten_batches and fmt is not None and fmt.nestable


class SampleHandler:
    """Samples and batches in memory (TokenSmith's ``manager.sample``)."""

    def __init__(self, manager: DatasetManager) -> None:
        self.manager = manager

    def get_samples_by_indices(
        self,
        indices: list[int],
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> list:
        """Windows of samples ``indices``: arrays (or text), paired with doc details if asked."""
        m = self.manager
        m._ready()
        if return_detokenized and tokenizer is None:
            raise UserError("tokenizer must be provided if return_detokenized is True")
        ids = m.order.check_ids(np.asarray(indices, np.int64).reshape(-1))
        windows = m.order.windows(m.dataset, ids)
        content: list = m._decoded(windows, tokenizer) if return_detokenized else list(windows)
        if not return_doc_details:
            return content
        det = m.order.doc_details(ids)
        return [(c, {k: int(v[i]) for k, v in det.items()}) for i, c in enumerate(content)]

    def get_batches_by_ids(
        self,
        batch_ids: list[int],
        batch_size: int,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> list[list]:
        """One list of samples per batch (batch b = samples ``[b*B, (b+1)*B)``)."""
        if batch_size <= 0:
            raise UserError("batch_size must be positive")
        out = []
        for b in batch_ids:
            ids = list(range(b * batch_size, (b + 1) * batch_size))
            out.append(
                self.get_samples_by_indices(ids, return_doc_details, return_detokenized, tokenizer)
            )
        return out


class InspectHandler:
    """One sample or batch (TokenSmith's ``manager.inspect``)."""

    def __init__(self, manager: DatasetManager) -> None:
        self.manager = manager

    def inspect_sample_by_id(
        self,
        sample_id: int,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> Any:
        """The window of ``sample_id`` (text if asked; with doc details if asked)."""
        return self.manager.sample.get_samples_by_indices(
            [sample_id], return_doc_details, return_detokenized, tokenizer
        )[0]

    def inspect_sample_by_batch(
        self,
        batch_id: int,
        batch_size: int,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> list:
        """The samples of global batch ``batch_id``."""
        return self.manager.sample.get_batches_by_ids(
            [batch_id], batch_size, return_doc_details, return_detokenized, tokenizer
        )[0]
