"""The columnar half of a corpus partition (pipeline/corpus/columns.py) against a plain
record-by-record reference, on NumPy + pandas and on the strict array API + pandas.

The reference is what the export did before its checks and statistics became columnar: the
full per-record check (``validate_record``), the split key check after it, and
``SplitStats.add`` over Python lists in input order. Reasons, details, members and every
statistic (float bits of the quality sum included) must be the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpu.backend import CPU, Backend
from gpu.hashing import bucket, hash_keys
from pipeline.corpus.partition import CorpusTask, transform
from pipeline.corpus.splits import key_bytes, parse_split
from pipeline.formats.corpus_stats import SplitStats
from pipeline.formats.record_checks import validate_record
from pipeline.formats.schema import Schema
from pipeline.io.records import PartitionData, SourcedRecord

STRICT = Backend(name="strict", array="array_api_strict", frame="pandas")

AWKWARD_TEXTS = [
    "plain words here",
    "",
    "   ",
    "\u3000\u2028\x1c",  # whitespace only, by Python's definition (not ASCII)
    " leading space is fine",
    "\u00a0non-breaking lead, fine",
    "a\x00b",
    "\x00",
    " \x00 ",
    "a\ud800b",  # unpaired surrogate
    "\x00\ud800",  # NUL comes first in the reasons
    "日本語のテキスト",
    "emoji 🙂 tab\there",
    "\u200bzero-width space is not whitespace",
]


def _records() -> list[SourcedRecord]:
    out, offset = [], 0
    domains = ["News", None, "Sport", 7, "News"]
    scores = [0.9, None, 0.61, 0.2, True, -0.0, 1, 0.8, "high", 0.6]
    for i in range(120):
        record: dict = {"id": f"doc-{i}", "text": AWKWARD_TEXTS[i % len(AWKWARD_TEXTS)]}
        record["domain"] = domains[i % len(domains)]
        record["quality_prob"] = scores[i % len(scores)]
        if i % 11 == 3:
            record["word_count"] = "many"  # wrong type, sometimes with an unusable text too
        if i % 13 == 5:
            del record["id"]  # no split key (with --split-key id)
        out.append(SourcedRecord(record, "part.jsonl", i + 1, offset))
        offset += 100 + i  # increasing, as in a file
    return out


def _task(backend: Backend, key: str | None) -> CorpusTask:
    split = parse_split("0.5,0.3,0.2", seed=11, key=key)
    return CorpusTask(Schema(), split, "jsonl", None, None, {}, None, "", backend)


def _reference(records: list[SourcedRecord], task: CorpusTask) -> tuple:
    """Record by record, in input order."""
    schema, key = task.schema, task.split.key
    rejects, valid, texts, keys = [], [], [], []
    for rec in records:
        mapped = schema.map_record(rec)
        problem = validate_record(schema, mapped)
        kb = key_bytes(rec.get(key)) if key is not None else None
        if problem is None and key is not None and kb is None:
            problem = ("missing_split_key", f"the split key field {key!r} is absent or null")
        if problem is not None:
            rejects.append((rec.offset, *problem))
            continue
        keys.append(kb)
        valid.append(mapped)
        texts.append(mapped["text"])
    hashes = hash_keys(keys if key is not None else [t.encode() for t in texts], 11, np)
    split_of = bucket(np, hashes, task.split.thresholds()).tolist()
    splits, stats = [], []
    for s in range(len(task.split.names)):
        mine = [i for i, x in enumerate(split_of) if x == s]
        recs = [valid[i] for i in mine]
        st = SplitStats()
        encoded = [texts[i].encode() for i in mine]
        st.add(
            [len(texts[i]) for i in mine],
            sum(map(len, encoded)),
            sum(len(t.split()) for t in (texts[i] for i in mine)),  # ASCII whitespace words
            [r["metadata"]["domain"] for r in recs],
            [r["metadata"]["quality_score"] for r in recs],
        )
        splits.append(recs)
        stats.append(st.to_json())
    return sorted(rejects), splits, stats


@pytest.mark.parametrize("backend", [CPU, STRICT], ids=["numpy-pandas", "strict-pandas"])
@pytest.mark.parametrize("key", [None, "id"])
def test_columnar_checks_and_statistics_equal_the_record_by_record_reference(
    backend: Backend, key: str | None
) -> None:
    records = _records()
    task = _task(backend, key)
    got = transform(PartitionData(records=records), task)
    want_rejects, want_splits, want_stats = _reference(records, task)
    assert [(r["offset"], r["reason"], r["detail"]) for r in got.rejects] == want_rejects
    assert got.splits == want_splits
    assert [s.to_json() for s in got.stats] == want_stats
    reasons = {r[1] for r in want_rejects}
    assert {"empty_text", "nul_in_text", "invalid_unicode", "wrong_type:metadata.word_count"} <= (
        reasons
    )
    assert ("missing_split_key" in reasons) == (key is not None)


def test_an_all_rejected_or_empty_partition_has_empty_statistics() -> None:
    records = [SourcedRecord({"text": "  "}, "p.jsonl", 1, 0)]
    for data in (PartitionData(records=records), PartitionData()):
        got = transform(data, _task(CPU, None))
        assert got.splits == [[], [], []]
        assert all(s.to_json() == SplitStats().to_json() for s in got.stats)
