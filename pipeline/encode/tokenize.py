"""Tokenize stage: a partition of records -> flat tokens + document offsets (+ rejects).

The client loads the Hugging Face fast tokenizer once (:func:`load_tokenizer`) and ships its
serialized Rust tokenizer to the workers as a :class:`TokenizerPayload`; a worker parses it
once per process (cached by content hash), so workers need no access to the tokenizer's path
and every worker tokenizes with exactly the same tokenizer as the client.

Documents are encoded in large batches by the Rust tokenizer (``encode_batch_fast``, the call
``tokenizer(texts)`` makes, without offsets), so each document equals
``tokenizer(text)["input_ids"]``; the optional BOS and EOD tokens are added with array
operations, not per document in Python.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpu.array_ops import concat, cumulative_sum
from gpu.backend import CPU, Backend
from pipeline.errors import UserError
from pipeline.formats.tokenizer import (  # noqa: F401
    TokenizerPayload,
    backend_for,
    load_tokenizer,
    payload_from_tokenizer,
)

# Reasons a record is rejected (counted in the manifest, written to the rejects file).
MISSING_FIELD = "missing_field"
NOT_TEXT = "not_text"
EMPTY_TEXT = "empty_text"

# One encode_batch call per this many documents or characters, whichever comes first: large
# enough for the Rust tokenizer to amortize the call, small enough that the Python id lists
# it returns (about 36 bytes per token) stay far below the partition's own size.
BATCH_DOCS = 2048
BATCH_CHARS = 4 << 20


@dataclass(frozen=True)
class EncodeOptions:
    """How records become documents (validated by :func:`encode_options`)."""

    field: str = "text"
    eod_id: int | None = None  # appended to every document when set
    bos_id: int | None = None  # prepended to every document when set


def encode_options(
    payload: TokenizerPayload,
    *,
    field: str = "text",
    append_eod: bool = False,
    add_bos: bool = False,
    eod_id: int | None = None,
    bos_id: int | None = None,
) -> EncodeOptions:
    """Check the token options against the tokenizer; all problems in one :class:`UserError`."""
    problems = []
    if not field:
        problems.append("--field must name the record field holding the text (default text)")
    eod = eod_id if eod_id is not None else payload.eos_id
    if append_eod and eod is None:
        problems.append(
            f"tokenizer {payload.name!r} has no eos token for --append-eod; pass --eod-id ID"
        )
    bos = bos_id if bos_id is not None else payload.bos_id
    if add_bos and bos is None:
        problems.append(
            f"tokenizer {payload.name!r} has no bos token for --add-bos; pass --bos-id ID"
        )
    for flag, value in (("--eod-id", eod_id), ("--bos-id", bos_id)):
        if value is not None and not 0 <= value < payload.vocab_size:
            problems.append(
                f"{flag} {value} is outside the vocabulary (0..{payload.vocab_size - 1})"
            )
    if problems:
        raise UserError("; ".join(problems))
    # A tokenizer whose template already starts documents with BOS (Llama) must not get a
    # second one: --add-bos then only guarantees what the tokenizer does anyway.
    wants_bos = add_bos and not (payload.adds_bos and bos == payload.bos_id)
    return EncodeOptions(
        field=field, eod_id=eod if append_eod else None, bos_id=bos if wants_bos else None
    )


@dataclass
class TokenizedPartition:
    """Documents of one partition as flat tokens + ``offsets[n+1]``, and what was rejected.

    ``tokens`` and ``offsets`` are arrays of the backend that packed them (NumPy on CPU).
    """

    tokens: Any
    offsets: Any
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        """Number of documents kept."""
        return int(self.offsets.shape[0]) - 1


def valid_texts(
    records: list[dict[str, Any]], text_field: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Split records into texts to tokenize and rejects (the corpus rejects layout), in order."""
    from pipeline.io.records import make_reject, record_text

    texts: list[str] = []
    rejects: list[dict[str, Any]] = []
    for record in records:
        text = record.get(text_field)
        if text is None:
            reason, detail = MISSING_FIELD, f"no field {text_field!r} (or it is null)"
        elif not isinstance(text, str):
            reason, detail = (
                NOT_TEXT,
                f"field {text_field!r} is a {type(text).__name__}, not a string",
            )
        elif not text or text.isspace():
            reason, detail = EMPTY_TEXT, f"field {text_field!r} is empty or only whitespace"
        else:
            texts.append(text)
            continue
        # Records from pipeline.io.records know their file, line and byte offset.
        where = (
            getattr(record, "file", None),
            getattr(record, "line", None),
            getattr(record, "offset", None),
        )
        rejects.append(make_reject(*where, reason, detail, record_text(record)))
    return texts, rejects


def _batches(texts: list[str]) -> list[list[str]]:
    out, start, chars = [], 0, 0
    for i, text in enumerate(texts):
        chars += len(text)
        if i + 1 - start >= BATCH_DOCS or chars >= BATCH_CHARS:
            out.append(texts[start : i + 1])
            start, chars = i + 1, 0
    if start < len(texts):
        out.append(texts[start:])
    return out


def encode_texts(
    texts: list[str],
    payload: TokenizerPayload,
    options: EncodeOptions,
    dtype: np.dtype,
    backend: Backend = CPU,
) -> tuple[Any, Any]:
    """Tokenize ``texts`` into flat tokens of ``dtype`` and int64 ``offsets[n+1]``.

    The tokenizer runs on the host (the Rust library); each batch's ids then go to
    ``backend`` once, where the markers are added and the documents packed, so the result is
    a pair of arrays of the backend.
    """
    tokenizer = backend_for(payload)
    xp = backend.xp
    dtype = np.dtype(dtype)
    token_parts: list[Any] = []
    length_parts: list[Any] = []
    for batch in _batches(texts):
        ids = [enc.ids for enc in tokenizer.encode_batch_fast(batch, add_special_tokens=True)]
        lengths = np.fromiter(map(len, ids), np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, count=int(lengths.sum()))
        del ids  # the Python lists are the large part of a batch; free them before the next
        flat = backend.from_numpy(flat)
        if options.bos_id is not None or options.eod_id is not None:
            flat, lengths = add_markers(backend, flat, lengths, options)
        token_parts.append(flat)
        length_parts.append(backend.from_numpy(lengths))
    if not length_parts:
        return xp.zeros(0, dtype=getattr(xp, dtype.name)), xp.zeros(1, dtype=xp.int64)
    offsets = cumulative_sum(xp, concat(xp, length_parts), xp.int64)
    tokens = token_parts[0] if len(token_parts) == 1 else concat(xp, token_parts)
    return tokens, offsets


def add_markers(
    backend: Backend, flat: Any, lengths: np.ndarray, options: EncodeOptions
) -> tuple[Any, np.ndarray]:
    """Prepend BOS / append EOD to every document: ``(tokens of the backend, new lengths)``.

    The layout is planned on the host from the document lengths (where each marker goes, as
    boolean masks: a scatter, which the array API lacks); the tokens are then placed on the
    backend with masked assignments, no Python loop over documents.
    """
    xp = backend.xp
    new_lengths = lengths + int(options.bos_id is not None) + int(options.eod_id is not None)
    ends = np.cumsum(new_lengths)
    starts = ends - new_lengths
    total = int(ends[-1]) if len(ends) else 0
    content = np.ones(total, bool)
    out = xp.zeros(total, dtype=flat.dtype)
    for marker, where in ((options.bos_id, starts), (options.eod_id, ends - 1)):
        if marker is not None:
            mask = np.zeros(total, bool)
            mask[where] = True
            content[where] = False
            out[backend.from_numpy(mask)] = xp.asarray(marker, dtype=flat.dtype)
    out[backend.from_numpy(content)] = flat
    return out, new_lengths


def tokenize_records(
    records: list[dict[str, Any]],
    payload: TokenizerPayload,
    options: EncodeOptions,
    dtype: np.dtype,
    backend: Backend = CPU,
) -> TokenizedPartition:
    """The stage: validate records, tokenize the valid ones in input order, count the rest."""
    texts, rejects = valid_texts(records, options.field)
    tokens, offsets = encode_texts(texts, payload, options, dtype, backend)
    counts = Counter(r["reason"] for r in rejects)
    return TokenizedPartition(tokens, offsets, rejects, dict(sorted(counts.items())))
