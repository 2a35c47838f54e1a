#!/usr/bin/env python3
"""Generate a classified corpus like the one NeMo Curator's workshop exports.

Records carry the fields a curation pipeline leaves behind: ``id``, ``text``, ``title``,
``url``, ``domain`` (a domain-classifier label), ``quality_prob`` and ``quality_pred``,
``word_count``, ``char_count``, ``language`` and ``language_score``. The text is made of
pseudo-English sentences (with some non-ASCII words), so nothing is downloaded.

Optionally plants bad records of every kind dexport must reject (invalid JSON, missing or
empty text, NUL bytes, wrong types, truncated UTF-8, a JSON array) plus blank lines, and
reports how many of each it wrote, so tests can check that every line is accounted for.

Examples::

    python scripts/make_sample_corpus.py /tmp/classified --docs 705
    python scripts/make_sample_corpus.py /tmp/big --target-bytes 1G --files 16
    python scripts/make_sample_corpus.py /tmp/bad --docs 500 --bad 40 --compression zstd
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import orjson

DOMAINS = (
    "Computers_and_Electronics",
    "Science",
    "Health",
    "Business_and_Industrial",
    "News",
    "Finance",
    "Arts_and_Entertainment",
    "Sports",
    "Law_and_Government",
    "Travel",
)
SITES = ("techpulse", "wikinews", "sciencedaily", "healthline", "bizweek", "arstech", "travelog")
SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ne",
    "ra",
    "to",
    "vu",
    "shi",
    "den",
    "por",
    "tal",
    "quen",
    "bri",
    "sol",
    "mar",
    "gen",
    "lin",
    "dro",
    "fe",
    "zu",
)
FOREIGN = ("café", "naïve", "über", "smörgåsbord", "日本語", "Ελληνικά", "русский", "emoji🙂")
BAD_KINDS = (
    "invalid_json",
    "missing_text",
    "empty_text",
    "nul_in_text",
    "text_not_string",
    "wrong_type_quality",
    "truncated_utf8",
    "not_an_object",
)


def _vocabulary(rng: np.random.Generator, size: int = 4000) -> list[str]:
    words = {"".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(size * 2)}
    vocab = (
        sorted(words)[:size] + ["the", "of", "and", "to", "in", "data", "model", "training"] * 20
    )
    return vocab + list(FOREIGN)


def _sentences(rng: np.random.Generator, vocab: list[str], count: int = 20000) -> list[str]:
    out = []
    arr = np.array(vocab, dtype=object)
    for _ in range(count):
        words = arr[rng.integers(0, len(arr), rng.integers(6, 22))]
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + ".")
    return out


class Generator:
    """Deterministic record factory (same seed, same records)."""

    def __init__(self, seed: int = 0, mean_words: int = 450) -> None:
        self.rng = np.random.default_rng(seed)
        vocab = _vocabulary(self.rng)
        self.sentences = _sentences(self.rng, vocab)
        self.titles = vocab
        self.mean_words = mean_words

    def record(self, i: int) -> dict:
        rng = self.rng
        n_sent = max(1, int(rng.lognormal(np.log(self.mean_words / 14), 0.6)))
        picks = rng.integers(0, len(self.sentences), n_sent)
        paragraphs = []
        for start in range(0, n_sent, 6):
            paragraphs.append(" ".join(self.sentences[j] for j in picks[start : start + 6]))
        text = "\n\n".join(paragraphs)
        title = " ".join(self.titles[j] for j in rng.integers(0, len(self.titles), 5)).title()
        q = float(np.round(rng.beta(5, 2), 4))
        return {
            "id": f"doc-{i:08d}",
            "text": text,
            "title": title,
            "url": (
                f"https://www.{SITES[i % len(SITES)]}.com/{i // 100}/"
                f"{title.lower().replace(' ', '-')}"
            ),
            "domain": DOMAINS[int(rng.integers(0, len(DOMAINS)))],
            "quality_prob": q,
            "quality_pred": "High" if q >= 0.8 else "Medium" if q >= 0.6 else "Low",
            "word_count": len(text.split()),
            "char_count": len(text),
            "language": "en",
            "language_score": float(np.round(rng.uniform(0.9, 1.0), 4)),
        }


def bad_line(kind: str, rec: dict) -> bytes:
    """One planted bad line of ``kind`` (see BAD_KINDS)."""
    if kind == "invalid_json":
        return orjson.dumps(rec)[:-25]  # cut off: unterminated string / object
    if kind == "missing_text":
        return orjson.dumps({k: v for k, v in rec.items() if k != "text"})
    if kind == "empty_text":
        return orjson.dumps({**rec, "text": "   \n  "})
    if kind == "nul_in_text":
        return orjson.dumps({**rec, "text": rec["text"][:40] + "\x00" + rec["text"][40:]})
    if kind == "text_not_string":
        return orjson.dumps({**rec, "text": 12345})
    if kind == "wrong_type_quality":
        return orjson.dumps({**rec, "quality_prob": "very good"})
    if kind == "truncated_utf8":
        line = orjson.dumps({**rec, "text": rec["text"][:30] + " café"})
        cut = line.index("café".encode()) + 4  # keeps the first byte of the 2-byte "é"
        return line[:cut] + line[cut + 1 :]
    if kind == "not_an_object":
        return b"[1, 2, 3]"
    raise ValueError(kind)


def _parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def generate(
    out: str,
    *,
    docs: int | None = None,
    target_bytes: int | None = None,
    files: int = 1,
    bad: int = 0,
    blank: int = 0,
    seed: int = 0,
    compression: str | None = None,
    fmt: str = "jsonl",
    mean_words: int = 450,
    first_id: int = 0,
) -> dict:
    """Write the corpus under ``out``; returns what was written (counts by kind)."""
    if (docs is None) == (target_bytes is None):
        raise ValueError("give exactly one of docs / target_bytes")
    os.makedirs(out, exist_ok=True)
    gen = Generator(seed, mean_words)
    plant = np.random.default_rng(seed + 1)
    bad_at = (
        set(plant.choice(docs, size=min(bad, docs), replace=False).tolist())
        if docs and bad
        else set()
    )
    per_file = target_bytes / files if target_bytes else None
    written = {
        "documents": 0,
        "bad": dict.fromkeys(BAD_KINDS, 0),
        "blank_lines": 0,
        "lines": 0,
        "bytes": 0,
        "files": [],
    }
    i = 0  # record number; ids start at first_id so corpora can be combined
    for f in range(files):
        lines: list[bytes] = []
        size = 0
        n_here = None if docs is None else docs // files + (1 if f < docs % files else 0)
        while (n_here is not None and len(lines) < n_here) or (
            per_file is not None and size < per_file
        ):
            rec = gen.record(first_id + i)
            if i in bad_at:
                kind = BAD_KINDS[len([b for b in bad_at if b < i]) % len(BAD_KINDS)]
                line = bad_line(kind, rec)
                written["bad"][kind] += 1
            else:
                line = orjson.dumps(rec)
                written["documents"] += 1
            lines.append(line)
            size += len(line) + 1
            i += 1
        for _ in range(blank if f == 0 else 0):
            lines.insert(len(lines) // 2, b"   ")
            written["blank_lines"] += 1
        written["lines"] += len(lines)
        written["files"].append(_write_file(out, f, lines, compression, fmt))
    written["bytes"] = sum(os.path.getsize(p) for p in written["files"])
    return written


def _write_file(out: str, f: int, lines: list[bytes], compression: str | None, fmt: str) -> str:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = os.path.join(out, f"classified-{f:04d}.parquet")
        rows = [orjson.loads(line) for line in lines if line.strip()]
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=max(1, len(rows) // 4))
        return path
    data = b"\n".join(lines) + b"\n"
    ext = {None: "", "gzip": ".gz", "zstd": ".zst"}[compression]
    path = os.path.join(out, f"classified-{f:04d}.jsonl{ext}")
    if compression == "gzip":
        import gzip

        data = gzip.compress(data, mtime=0)
    elif compression == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output directory")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--docs", type=int, help="number of records (good + bad)")
    size.add_argument("--target-bytes", type=_parse_size, help="approximate size, e.g. 1G")
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--bad", type=int, default=0, help="planted bad records (with --docs)")
    parser.add_argument("--blank", type=int, default=0, help="blank lines in the first file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-words", type=int, default=450)
    parser.add_argument("--compression", choices=("gzip", "zstd"))
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    args = parser.parse_args(argv)
    info = generate(
        args.out,
        docs=args.docs,
        target_bytes=args.target_bytes,
        files=args.files,
        bad=args.bad,
        blank=args.blank,
        seed=args.seed,
        compression=args.compression,
        fmt=args.format,
        mean_words=args.mean_words,
    )
    json.dump(info, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
