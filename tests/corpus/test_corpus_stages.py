"""Stages of the corpus export: schema mapping, validation, split hashing, statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu import hashing
from pipeline.corpus.splits import (
    exact_boundaries,
    exact_counts,
    exact_mode_assign,
    hash_mode_assign,
    parse_split,
)
from pipeline.errors import UserError
from pipeline.formats.corpus_stats import (
    SplitStats,
    count_words,
    dataset_stats,
    length_stats,
    words_and_bytes,
)
from pipeline.formats.record_checks import validate_record
from pipeline.formats.schema import MISSING, Schema, load_schema, parse_schema

RECORD = {
    "text": "Hello world",
    "title": "T",
    "url": "https://x",
    "domain": "News",
    "quality_prob": "0.87",
    "word_count": 2.0,
    "id": 5,
}


# -- schema --------------------------------------------------------------------------------
def test_default_schema_maps_to_the_training_schema() -> None:
    out = Schema().map_record(RECORD)
    assert out == {
        "text": "Hello world",
        "metadata": {
            "title": "T",
            "source_url": "https://x",
            "domain": "News",
            "quality_score": 0.87,
            "word_count": 2,
        },
    }
    assert list(out["metadata"]) == ["title", "source_url", "domain", "quality_score", "word_count"]


def test_missing_optional_fields_become_null_after_validation() -> None:
    schema = Schema()
    out = schema.map_record({"text": "x"})
    assert out["metadata"]["title"] is MISSING
    assert validate_record(schema, out) is None and out["metadata"]["title"] is None


def test_schema_file_renames_nests_drops_sets_static_values_and_types(tmp_path: Path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text(
        "text: content\n"
        "fields:\n"
        "  content: body\n"
        "  meta.lang: {from: info.lang, type: string, required: true}\n"
        "  meta.score: {from: score, type: float}\n"
        "static:\n"
        "  meta.curation_date: 2024-01-15\n"
        "  meta.version: 3\n"
        "unmapped: metadata\n"
        "drop: [secret]\n"
        "stats: {domain: null, quality: meta.score}\n"
    )
    schema = load_schema(str(path), assignments=["meta.source=wikipedia"])
    rec = {"body": "text here", "info": {"lang": "en"}, "score": 1, "secret": "x", "extra": [1]}
    out = schema.map_record(rec)
    assert validate_record(schema, out) is None
    assert out == {
        "content": "text here",
        "meta": {
            "lang": "en",
            "score": 1.0,
            "curation_date": "2024-01-15",
            "version": 3,
            "source": "wikipedia",
        },
        "metadata": {"extra": [1]},
    }
    assert schema.domain_field is None and schema.quality_field == "meta.score"
    assert validate_record(schema, schema.map_record({"body": "t"})) == (
        "missing_field:meta.lang",
        "meta.lang is absent",
    )
    assert Schema.from_dict(schema.as_dict()) == schema


def test_schema_problems_are_gathered() -> None:
    with pytest.raises(UserError, match=r"unknown key 'feilds'.*"):
        parse_schema("feilds: {}\n")
    with pytest.raises(UserError, match=r"unknown type 'float64'.*no rule for the text field"):
        parse_schema("fields: {metadata.q: {from: q, type: float64}}\n")
    with pytest.raises(UserError, match="not PATH=VALUE"):
        Schema().with_static(["metadata.source"])


def test_arrow_schema_nests_metadata() -> None:
    arrow = Schema().arrow_schema()
    assert arrow.names == ["text", "metadata"]
    assert [f.name for f in arrow.field("metadata").type] == [
        "title",
        "source_url",
        "domain",
        "quality_score",
        "word_count",
    ]


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"title": "no text"}, "missing_text"),
        ({"text": None}, "text_not_string"),
        ({"text": 12}, "text_not_string"),
        ({"text": " \n\t "}, "empty_text"),
        ({"text": "a\x00b"}, "nul_in_text"),
        ({"text": "a\ud800b"}, "invalid_unicode"),
        ({"text": "ok", "quality_prob": "very good"}, "wrong_type:metadata.quality_score"),
        ({"text": "ok", "word_count": 1.5}, "wrong_type:metadata.word_count"),
        ({"text": "ok", "word_count": True}, "wrong_type:metadata.word_count"),
        ({"text": "ok", "title": ["a"]}, "wrong_type:metadata.title"),
        ({"text": "ok", "title": 7}, None),  # numbers convert to strings without loss
        # Integers beyond 64 bits are read as floats: converting them would lose digits.
        ({"text": "ok", "domain": 2.0**70}, "wrong_type:metadata.domain"),
        ({"text": "ok", "word_count": 2.0**70}, "wrong_type:metadata.word_count"),
        ({"text": "ok", "word_count": "1" * 25}, "wrong_type:metadata.word_count"),
        ({"text": "ok", "word_count": 2.0**62}, None),  # exact, and within 64 bits
        ({"text": "ok", "quality_prob": 2**53 + 1}, "wrong_type:metadata.quality_score"),
        ({"text": "ok", "quality_prob": 2**60}, None),  # a float holds it exactly
    ],
)
def test_validation_reasons(record: dict, reason: str | None) -> None:
    schema = Schema()
    problem = validate_record(schema, schema.map_record(record))
    assert (problem[0] if problem else None) == reason


def test_exported_records_must_have_every_field() -> None:
    rec = {
        "text": "ok",
        "metadata": {"title": None, "source_url": None, "domain": None, "quality_score": None},
    }
    assert validate_record(Schema(), rec, exported=True)[0] == "missing_field:metadata.word_count"
    rec["metadata"]["word_count"] = None
    assert validate_record(Schema(), rec, exported=True) is None


# -- splits --------------------------------------------------------------------------------
def test_split_forms() -> None:
    assert parse_split("0.95,0.03,0.02").names == ("train", "validation", "test")
    spec = parse_split("train=0.8,dev=0.2", seed=1)
    assert spec.names == ("train", "dev") and spec.thresholds() == [(4 << 64) // 5]
    assert parse_split("0.333,0.333,0.334").ratios[-1] == pytest.approx(0.334)
    counts = parse_split("train=rest,validation=30,test=20", exact=True)
    assert counts.counts == (None, 30, 20) and exact_counts(counts, 705) == [655, 30, 20]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.95,0.3,0.02", "sum to 1.27"),
        ("0.9,x", "'x' is not a number"),
        ("1,0,0", "must be greater than 0"),
        ("a=0.5,a=0.5", "repeat"),
        ("0.9,train=0.1", "mixes named"),
        ("train=rest,test=10", "add --exact-counts"),
        ("0.25,0.25,0.25,0.25", "name them"),
    ],
)
def test_bad_splits_are_user_errors(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_split(text)


def test_exact_counts_use_largest_remainders() -> None:
    assert exact_counts(parse_split("0.95,0.03,0.02"), 705) == [670, 21, 14]
    assert exact_counts(parse_split("0.5,0.5"), 3) == [2, 1]
    with pytest.raises(UserError, match="sum to 100 but the input has 99"):
        exact_counts(parse_split("a=50,b=50", exact=True), 99)


def test_hash_is_stable_and_backend_independent() -> None:
    keys = [b"", b"a", b"abcdefgh", b"abcdefgh\x00", "日本語テキスト".encode() * 50]
    h = hashing.hash_keys(keys, 42)
    # Golden values: a change here re-assigns every record of every user's export.
    assert h.tolist()[:3] == [10946711343035318437, 13727364829750347642, 13951430923129004632]
    strict = hashing.hash_keys(keys, 42, xp=array_api_strict)
    assert np.asarray(strict).tolist() == h.tolist()
    assert hashing.hash_keys(keys, 42, batch_bytes=1).tolist() == h.tolist()
    assert hashing.hash_keys(keys, 43).tolist() != h.tolist()


def test_hash_split_follows_ratios() -> None:
    spec = parse_split("0.95,0.03,0.02", seed=42)
    ids = hash_mode_assign(spec, [f"document {i}".encode() for i in range(100_000)])
    share = np.bincount(ids, minlength=3) / len(ids)
    assert share == pytest.approx([0.95, 0.03, 0.02], abs=0.003)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=60), st.integers(1, 5))
def test_exact_boundaries_cut_the_global_ranking(hashes: list[int], files: int) -> None:
    h = np.array(hashes, dtype=np.uint64)
    f = np.arange(len(h), dtype=np.int64) % files
    o = np.arange(len(h), dtype=np.int64)
    sizes = exact_counts(parse_split("0.6,0.3,0.1"), len(h))
    bounds = exact_boundaries(h, f, o, sizes)
    got = exact_mode_assign(h, f, o, bounds)
    order = sorted(range(len(h)), key=lambda i: (hashes[i], f[i], o[i]))
    want = np.zeros(len(h), np.int64)
    want[order[sizes[0] : sizes[0] + sizes[1]]] = 1
    want[order[sizes[0] + sizes[1] :]] = 2
    assert got.tolist() == want.tolist()


# -- statistics ----------------------------------------------------------------------------
def test_word_counts_match_str_split() -> None:
    texts = [
        "one two  three",
        " lead and trail ",
        "tabs\tand\nnewlines",
        "x",
        "naïve café 日本",
        "a" * 20,
    ]
    buffer, offsets, _ = hashing.pack_keys([t.encode() for t in texts])
    assert count_words(buffer, offsets[:-1] * 8).tolist() == [len(t.split()) for t in texts]
    assert words_and_bytes(texts) == (
        sum(len(t.split()) for t in texts),
        sum(len(t.encode()) for t in texts),
    )


def test_split_stats_merge_and_round_trip() -> None:
    a, b = SplitStats(), SplitStats()
    a.add([3, 5], 8, 2, ["News", None], [0.9, None])
    b.add([5], 5, 1, ["News"], [0.61], tokens=4)
    merged = SplitStats.from_json(a.to_json()).merge(SplitStats.from_json(b.to_json()))
    assert merged.count == 3 and merged.lengths == Counter({5: 2, 3: 1}) and merged.tokens == 4
    assert merged.domains == Counter({"News": 2, "unknown": 1})
    assert merged.quality == Counter({"high": 1, "medium": 1, "missing": 1})
    assert merged.summary()["avg_text_length"] == pytest.approx(13 / 3, abs=0.01)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e308, max_value=1e308), min_size=1, max_size=30),
    st.integers(0, 30),
)
def test_quality_mean_is_exact_whatever_the_partitioning(scores: list[float], cut: int) -> None:
    from fractions import Fraction

    def stats_of(parts: list[list[float]]) -> dict:
        total = SplitStats()
        for part in parts:
            one = SplitStats()
            one.add([1] * len(part), len(part), len(part), [None] * len(part), part)
            total.merge(SplitStats.from_json(one.to_json()))
        return dataset_stats({"train": total}, Counter(), {})

    whole = stats_of([scores])
    assert whole == stats_of([scores[:cut], scores[cut:]])  # no float sum: same bits
    exact = sum(map(Fraction, scores)) / len(scores)
    assert whole["quality_score_mean"] == round(float(exact), 4)  # never inf, never a crash


def test_length_stats_are_exact_percentiles() -> None:
    stats = length_stats(Counter(range(1, 101)))
    assert (stats["min"], stats["max"], stats["median"], stats["p95"], stats["mean"]) == (
        1,
        100,
        50,
        95,
        50.5,
    )
