"""Python API: a drop-in for TokenSmith's ``DatasetManager`` on dexport's parallel engine.

    from pipeline import DatasetManager  # was: from tokensmith.manager import DatasetManager
    manager = DatasetManager()
    manager.setup_edit_inspect_sample_export("data/ds", "data/index/ds", train_iters=1000,
                                             train_batch_size=32, train_seq_len=2048, seed=1234)
    manager.export.export_batch_range(5000, 5010, 32, "out/batches.jsonl", tokenizer=tok)

Same method names, argument names, defaults and return types as TokenSmith: raw samples are lists
of token arrays (one per document segment), detokenized ones strings, doc details plain dicts;
any object with ``decode`` is a tokenizer; ``output_path`` with an extension is one file in
``format_type``. The exports run as chunked tasks in this process's threads, or on a Dask
cluster when ``client=``, ``scheduler=`` or ``workers=`` is given; ``backend="gpu"`` (or
``"auto"``) detokenizes on the GPU, with the same output bytes. TokenSmith's ``edit``,
``search`` and ``ingest`` exist and raise :class:`~pipeline.errors.NotSupported`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.errors import NotSupported, UserError
from pipeline.formats.indexed_dataset import IndexedDataset
from pipeline.formats.token_formats import FORMATS
from pipeline.io.storage import check_reachable, storage_errors
from pipeline.tokens.blend import Blend
from pipeline.tokens.blend_order import BlendOrder
from pipeline.tokens.decode_fallback import DecodeFallback, is_hf_tokenizer
from pipeline.tokens.job import TokenExport, prepare_token_export, run_token_export
from pipeline.tokens.sample_order import SampleOrder
from pipeline.tokens.selection import make_selection
from pipeline.tokens.source import TrainingRun, open_sample_order

# Where to do what TokenSmith has and dexport does not.
_ELSEWHERE = {
    "edit": "editing a dataset (injecting sequences) is TokenSmith's: run TokenSmith itself "
    "(github.com/aflah02/TokenSmith) on the same .bin/.idx and index files",
    "search": "n-gram search is TokenSmith's: run TokenSmith itself "
    "(github.com/aflah02/TokenSmith; setup_search indexes the same .bin)",
    "ingest": "ingesting data is TokenSmith's: run TokenSmith itself "
    "(github.com/aflah02/TokenSmith), or tokenize text into a Megatron dataset with "
    "`dexport encode` / pipeline.encode_corpus",
}


def _not_supported(call: str, feature: str) -> NotSupported:
    return NotSupported(
        f"{call} is not part of dexport, which exports, samples and inspects training data "
        f"(manager.export, manager.sample, manager.inspect); {_ELSEWHERE[feature]}"
    )


class UnsupportedHandler:
    """Stands where TokenSmith has ``manager.edit``, ``.search`` and ``.ingest``: using any of
    its methods raises :class:`~pipeline.errors.NotSupported` saying where to do it instead."""

    def __init__(self, feature: str) -> None:
        self._feature = feature

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # introspection (copy, pickle, IPython) sees a plain object
            raise AttributeError(name)
        raise _not_supported(f"manager.{self._feature}.{name}", self._feature)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _not_supported(f"manager.{self._feature}", self._feature)

    def __repr__(self) -> str:
        return f"<manager.{self._feature}: not part of dexport; use TokenSmith itself>"


class DatasetManager:
    """Entry point: set up once, then use ``.export``, ``.sample`` and ``.inspect``."""

    def __init__(
        self,
        *,
        client: Any = None,
        scheduler: str | None = None,
        workers: int | None = None,
        storage_options: dict | None = None,
        backend: str = "cpu",
    ) -> None:
        self._client = client
        self._backend = backend  # cpu | gpu | auto: where exports detokenize (same bytes)
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
        self.edit = UnsupportedHandler("edit")
        self.search = UnsupportedHandler("search")
        self.ingest = UnsupportedHandler("ingest")
        # id(tokenizer object) -> (the object, kept alive; its path or DecodeFallback)
        self._tokenizers: dict[int, tuple[Any, str | DecodeFallback]] = {}
        self._tokenizer_dirs: list[str] = []

    def setup_edit_inspect_sample_export(
        self,
        dataset_prefix: str | None,
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
        convention: str | None = None,
        split: str = "train",
        blend: Blend | None = None,
    ) -> None:
        """Open the dataset and load (or build and cache) the training run's sample order.

        A blended run passes ``dataset_prefix=None`` and ``blend`` (:func:`neox_blend`,
        :func:`megatron_blend` or ``read_neox_config(paths)["blend"]``); its convention is the
        blend's, and ``batch_info_save_prefix`` is the folder of its index files (None: next to
        each dataset). Samples then come from the blend's datasets, and doc details also say
        ``dataset`` and ``dataset_sample_id``.
        """
        if self.export is not None:
            raise UserError("handlers already initialized; create a new DatasetManager")
        if (blend is None) == (dataset_prefix is None):
            raise UserError("give dataset_prefix or blend= (a blended run), exactly one")
        convention = convention or (blend.convention if blend is not None else "neox")
        if add_extra_token_to_seq not in (0, 1):
            raise UserError("add_extra_token_to_seq must be 0 or 1")
        if convention == "neox" and add_extra_token_to_seq != 1:
            raise UserError(
                "GPT-NeoX runs always add one extra token; "
                "use convention='megatron' for add_extra_token_to_seq=0"
            )
        prefixes = blend.all_prefixes() if blend is not None else [dataset_prefix]
        # a dead S3 endpoint: StorageUnreachable in seconds, not after botocore's retries
        check_reachable([*prefixes, batch_info_save_prefix or ""], self.storage_options)
        if blend is None:
            with storage_errors():
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
            blend=blend,
        )
        with storage_errors():  # storage failures: UserError, or TemporaryFailure to retry
            self.order = open_sample_order(self.dataset, self.run)
        self.export = ExportHandler(self)
        self.sample = SampleHandler(self)
        self.inspect = InspectHandler(self)

    def setup_search(self, *args: Any, **kwargs: Any) -> None:
        """TokenSmith's n-gram search index: not part of dexport (raises NotSupported)."""
        raise _not_supported("manager.setup_search", "search")

    # -- engine -----------------------------------------------------------------------------
    @property
    def executor(self) -> Any:
        """Where exports run: this process's threads unless a client, scheduler or workers
        was given.

        The in-process default starts no processes, and the worker processes of an embedded
        cluster (``workers=``) never run the calling script again, so a plain script without an
        ``if __name__ == "__main__":`` guard, a notebook or ``python -c`` never hangs.
        """
        if self._executor is None:
            from pipeline.runtime.executor import open_executor

            self._executor_cm = open_executor(
                client=self._client,
                scheduler=self._scheduler,
                workers=self._workers,
                backend=self._backend,
                in_process=True,
            )
            self._executor = self._executor_cm.__enter__()
            atexit.register(self.close)
        return self._executor

    def close(self) -> None:
        """Release the threads or shut down the cluster this manager started (if any), and
        remove the folders tokenizer objects were saved to."""
        if self._executor_cm is not None:
            cm, self._executor_cm, self._executor = self._executor_cm, None, None
            cm.__exit__(None, None, None)
        self._tokenizers.clear()
        while self._tokenizer_dirs:
            shutil.rmtree(self._tokenizer_dirs.pop(), ignore_errors=True)

    def __enter__(self) -> DatasetManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tokenizer_arg(self, tokenizer: Any) -> str | DecodeFallback | None:
        """What a TokenExport takes: a path for a folder or a Hugging Face fast tokenizer (saved
        once to a temporary folder, so workers load its byte table), or a DecodeFallback that
        calls ``decode`` of any other object per window."""
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            return None if tokenizer is None else os.fspath(tokenizer)
        held = self._tokenizers.get(id(tokenizer))
        if held is None or held[0] is not tokenizer:
            if is_hf_tokenizer(tokenizer):
                folder = tempfile.mkdtemp(prefix="dexport-tokenizer-")
                self._tokenizer_dirs.append(folder)
                tokenizer.save_pretrained(folder)
                held = (tokenizer, folder)
            else:
                held = (tokenizer, DecodeFallback(tokenizer))
            self._tokenizers[id(tokenizer)] = held
        return held[1]

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
            prefix=self.dataset.prefix if self.dataset is not None else None,
            out=os.fspath(output_path),
            selection_kind=kind,
            selection_value=value,
            run=run,
            content="text" if return_detokenized else "tokens",
            tokenizer=self._tokenizer_arg(tokenizer),
            doc_details=include_doc_details,
            nested=nested,
            format=format_type,
            chunk_size=chunk_size,
            overwrite=overwrite,
            storage_options=self.storage_options,
            single=_one_file(output_path),
            batch_id_last=True,
            backend=self._backend,
        )
        with storage_errors():
            prepared = prepare_token_export(
                spec, dataset=self.dataset, order=None if kind == "documents" else self.order
            )
            return run_token_export(prepared, self.executor, progress=False)

    def _texts(self, ids: np.ndarray, tokenizer: Any, skip_special_tokens: bool = False) -> list:
        """Samples ``ids`` decoded exactly as ``tokenizer.decode(window)``; UserError when a
        window holds an id the tokenizer does not know (not the dataset's tokenizer)."""
        from pipeline.tokens.job import _detokenizer, check_vocabulary

        windows = self.order.windows(self.dataset, ids)
        detok = _detokenizer(self._tokenizer_arg(tokenizer), skip_special_tokens)
        if isinstance(self.order, BlendOrder):
            names = self.order.provenance(ids)[0]
            for name in dict.fromkeys(names.tolist()):
                check_vocabulary(windows[names == name], detok, name)
        else:
            check_vocabulary(windows, detok, self.dataset.prefix)
        n, width = windows.shape
        return detok.decode(windows.reshape(-1), np.arange(n + 1, dtype=np.int64) * width)

    def _segments(self, ids: np.ndarray) -> list[list[np.ndarray]]:
        """Samples ``ids`` as TokenSmith returns them: one token array per document the window
        spans (in the dataset's dtype); concatenated they are the window the model saw (a
        window padded to length ends with an array of pad tokens)."""
        if isinstance(self.order, BlendOrder):
            samples: list = [None] * len(ids)
            for k, positions, plan in self.order.plan(ids):
                dataset = self.order.components[k].dataset
                for row, segments in zip(positions, _plan_segments(dataset, plan), strict=True):
                    samples[row] = segments
            return samples
        return _plan_segments(
            self.dataset,
            self.order.plan_windows(self.dataset.token_starts, self.dataset.sizes, ids),
        )

    def _samples(
        self,
        ids: np.ndarray,
        return_doc_details: bool,
        return_detokenized: bool,
        tokenizer: Any,
    ) -> list:
        """Checked sample ids -> TokenSmith's sample values (optionally paired with details)."""
        if return_detokenized and tokenizer is None:
            raise UserError("tokenizer must be provided if return_detokenized is True")
        if len(ids) == 0:
            return []
        content = self._texts(ids, tokenizer) if return_detokenized else self._segments(ids)
        if not return_doc_details:
            return content
        det: dict[str, Any] = dict(self.order.doc_details(ids))
        if isinstance(self.order, BlendOrder):
            names, sample_ids = self.order.provenance(ids)
            det = {"dataset": names.tolist(), "dataset_sample_id": sample_ids.tolist(), **det}
        return [
            (c, {k: v[i] if k == "dataset" else int(v[i]) for k, v in det.items()})
            for i, c in enumerate(content)
        ]

    def _checked(self, kind: str, values: Any, batch_size: int | None = None) -> np.ndarray:
        """Sample ids of ``values`` (sample or batch ids), each checked against the order:
        SelectionOutOfRange (a UserError and an IndexError) names the first one outside."""
        self._ready()
        ids = _int_ids(values, "batch_ids" if kind == "batches" else "indices")
        if len(ids) == 0:
            return ids
        selection = make_selection(
            kind,
            ids,
            num_samples=len(self.order),
            num_documents=len(self.dataset) if self.dataset is not None else 0,
            batch_size=batch_size,
        )
        return selection.ids


def _plan_segments(dataset: IndexedDataset, plan: Any) -> list[list[np.ndarray]]:
    """One token array per document segment of each window of ``plan`` (pad array last)."""
    flat = dataset.read(plan.starts, plan.lengths)
    pieces = np.split(flat, np.cumsum(plan.lengths)[:-1]) if len(plan.lengths) else []
    pad_dtype = np.result_type(flat.dtype, np.min_scalar_type(plan.pad_token))
    samples, k = [], 0
    for count in plan.counts.tolist():
        segments = pieces[k : k + count]
        k += count
        short = plan.width - sum(len(x) for x in segments)
        if short > 0:
            segments.append(np.full(short, plan.pad_token, pad_dtype))
        samples.append(segments)
    return samples


def _int_ids(values: Any, name: str) -> np.ndarray:
    """``values`` (a list, tuple, range or array of integers) as int64."""
    array = np.asarray(list(values) if isinstance(values, range) else values)
    if array.size and array.dtype.kind not in "iu":
        raise UserError(f"{name} must be integers (got {array.dtype} values)")
    return array.astype(np.int64).reshape(-1)


def _one_file(output_path: str) -> bool:
    """TokenSmith writes ``output_path`` as one file whatever its name (``x.json``, ``x.txt``,
    ``x.JSONL``, ``out/all``); a path ending in ``/`` (or an existing folder) asks for a folder
    of part files instead."""
    path = os.fspath(output_path)
    return not (path.endswith(("/", os.sep)) or os.path.isdir(path))


class ExportHandler:
    """TokenSmith's six export methods (plus ``export_documents``), on the Dask engine.

    ``output_path`` is one file in ``format_type`` whatever its name (``x.jsonl``, ``x.json``,
    ``out/all``; gzip/zstd when the name ends in ``.gz``/``.zst``), as TokenSmith writes it; a
    path ending in ``/`` (or an existing folder) is a folder of part files and
    ``_manifest.json``. Each call returns the run's summary (records, tokens, files, bytes,
    seconds, tokens/s) where TokenSmith returns None.
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
    """Samples and batches in memory (TokenSmith's ``manager.sample``), with its return types.

    A raw sample is a list of token arrays, one per document segment of the window, in the
    dataset's dtype (``np.concatenate(sample)`` is the window); a detokenized one is the string
    ``tokenizer.decode(window)``; with ``return_doc_details`` each becomes ``(sample, details)``,
    ``details`` a dict of ``doc_index_f``, ``doc_index_l``, ``offset_f``, ``offset_l`` (ints).
    An id outside the order raises SelectionOutOfRange, both a ValueError and an IndexError.
    """

    def __init__(self, manager: DatasetManager) -> None:
        self.manager = manager

    def get_samples_by_indices(
        self,
        indices: list[int],
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> list:
        """Samples ``indices`` (training order), in the order given."""
        m = self.manager
        ids = m._checked("sequences", indices)
        return m._samples(ids, return_doc_details, return_detokenized, tokenizer)

    def get_batches_by_ids(
        self,
        batch_ids: list[int],
        batch_size: int,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> list[list]:
        """One list of samples per batch (batch b = samples ``[b*B, (b+1)*B)``)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise UserError(f"batch_size must be a positive integer (got {batch_size!r})")
        if batch_size <= 0:
            raise UserError(f"batch_size must be a positive integer (got {batch_size})")
        m = self.manager
        ids = m._checked("batches", batch_ids, int(batch_size))
        flat = m._samples(ids, return_doc_details, return_detokenized, tokenizer)
        return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]

    def get_samples_by_policy(
        self,
        policy_fn: Callable[..., list[int]],
        *policy_args: Any,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
        **policy_kwargs: Any,
    ) -> list:
        """Samples at the indices ``policy_fn(*policy_args, **policy_kwargs)`` returns."""
        indices = _policy_ids(policy_fn, policy_args, policy_kwargs, "sample indices")
        return self.get_samples_by_indices(
            indices, return_doc_details, return_detokenized, tokenizer
        )

    def get_batches_by_policy(
        self,
        policy_fn: Callable[..., list[int]],
        batch_size: int,
        *policy_args: Any,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
        **policy_kwargs: Any,
    ) -> list[list]:
        """Batches at the ids ``policy_fn(*policy_args, **policy_kwargs)`` returns."""
        batch_ids = _policy_ids(policy_fn, policy_args, policy_kwargs, "batch ids")
        return self.get_batches_by_ids(
            batch_ids, batch_size, return_doc_details, return_detokenized, tokenizer
        )


def _policy_ids(policy_fn: Any, args: tuple, kwargs: dict, what: str) -> Any:
    if not callable(policy_fn):
        raise UserError("policy_fn must be callable")
    ids = policy_fn(*args, **kwargs)
    if not isinstance(ids, list | tuple | range | np.ndarray):
        raise UserError(f"policy_fn must return a list of {what} (got {type(ids).__name__})")
    return ids


class InspectHandler:
    """One sample or batch (TokenSmith's ``manager.inspect``); values as :class:`SampleHandler`."""

    def __init__(self, manager: DatasetManager) -> None:
        self.manager = manager

    def inspect_sample_by_id(
        self,
        sample_id: int,
        return_doc_details: bool = False,
        return_detokenized: bool = False,
        tokenizer: Any = None,
    ) -> Any:
        """Sample ``sample_id``: its token arrays or text (with its doc details if asked)."""
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
