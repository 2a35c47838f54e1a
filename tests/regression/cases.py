"""Byte-identity regression cases: every command and API call, with the sha256 of each file.

``expected_sha256.json`` next to this file holds, per case, the sha256 of every file the case
wrote, as produced by the code before the package refactor (commit fd2ddc9). The test
``test_bytes_unchanged.py`` re-runs the cases with the current code and compares.

Regenerate (only when an output change is intended), with the code whose bytes are the
reference first on the path::

    git worktree add /tmp/dexport-old fd2ddc9     # the reference code, outside the repo
    PYTHONPATH=/tmp/dexport-old .venv/bin/python tests/regression/cases.py --write

(Run the script by its path: ``python -c``/``python -m`` from the repository root would put the
working tree before ``PYTHONPATH``. The script prints which ``pipeline`` the driver and the
workers imported.) Without ``--write`` it prints the digests; ``--output F`` writes them to F
(run twice and compare to check determinism), ``--keep DIR`` keeps the files, ``--case NAME``
runs some cases only.

Every case runs under the fixed path ``/tmp/dexport-regression`` (a symbolic link to the run's
temporary folder, see :data:`FIXED_ROOT`), so the absolute paths dexport writes into its outputs
are the same on every run and every file is hashed exactly as written, without normalization.

This module imports only the public surface (``pipeline.cli.main`` and ``pipeline``'s
``DatasetManager`` / ``export_corpus`` / ``encode_corpus``): internal modules are being moved.
Every input is generated here (own text and corpus generator, own Megatron writer) from fixed
seeds, except the tokenizer, which is shipped in ``data/tokenizer`` (the byte-level BPE of
``tests/tokenizers_fixtures.byte_bpe_tokenizer_dir``, saved once) so the expected digests do not
depend on the tokenizer trainer or on other test helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import random
import shlex
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected_sha256.json"
TOKENIZER_FILES = HERE / "data" / "tokenizer"

# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------

_WORDS = (
    "the of and to in is was for on that with as by it at from model data token batch "
    "training corpus sample window document export shard index bytes loss step layer "
    "don't it's I'm \" ' . , ? ! ( ) [ ] { } ; : - _ / \\ @ # $ % & * + = ~ < >"
).split()
_ACCENTED = "café naïve résumé über Ärger Straße São Zürich niño Αθήνα Москва привет Łódź".split()
_CJK = "日本語の文章を書きます。東京都中国北京市한국어로된문장입니다漢字仮名交じり文"
_EMOJI = "🙂😀🎉🚀👍🏽👨‍👩‍👧‍👦🇫🇷❤️✨🤖"
_RARE = "ꙮ𝔘𝔫𝔦𝔠𝔬𝔡𝔢𐍈𓀀ℵ∑∫≠≤→⇒€£¥₿§¶†‡‰"


def make_texts(n: int, seed: int) -> list[str]:
    """``n`` deterministic documents mixing ASCII, accents, CJK, emoji, rare scripts, tabs."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 40)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(_WORDS))
            elif r < 0.78:
                parts.append(rng.choice(_ACCENTED))
            elif r < 0.88:
                start = rng.randrange(len(_CJK) - 4)
                parts.append(_CJK[start : start + rng.randint(1, 4)])
            elif r < 0.94:
                parts.append("".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 3))))
            elif r < 0.97:
                parts.append(rng.choice(_RARE))
            else:
                parts.append(str(rng.randint(0, 100000)))
        sep = rng.choice([" ", " ", " ", "  ", "\t", "\n"])
        out.append(sep.join(parts))
    return out


def write_megatron(prefix: Path, docs: list[np.ndarray], dtype: Any) -> None:
    """A Megatron indexed dataset: one sequence per document (``PREFIX.bin`` + ``PREFIX.idx``).

    ``.idx``: magic, ``<Q`` version 1, ``<B`` dtype code (8 uint16, 4 int32), ``<Q`` sequences,
    ``<Q`` documents + 1, int32 lengths, int64 byte offsets, int64 document boundaries.
    """
    dtype = np.dtype(dtype)
    code = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}[dtype]
    sizes = np.asarray([len(d) for d in docs], np.int32)
    pointers = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    bounds = np.arange(len(docs) + 1, dtype=np.int64)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{prefix}.bin", "wb") as fh:
        for d in docs:
            fh.write(np.asarray(d, dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as fh:
        fh.write(b"MMIDIDX\x00\x00")
        fh.write(struct.pack("<Q", 1))
        fh.write(struct.pack("<B", code))
        fh.write(struct.pack("<Q", len(sizes)))
        fh.write(struct.pack("<Q", len(bounds)))
        fh.write(sizes.tobytes())
        fh.write(pointers.tobytes())
        fh.write(bounds.tobytes())


_DOMAINS = ("Science", "Health", "News", "Finance", "Sports", "Law_and_Government", "Travel")
_SITES = ("techpulse", "wikinews", "sciencedaily", "healthline")
# Planted bad lines, one of each reason dexport rejects (see docs/corpus.md).
# fmt: off
_BAD_KINDS = (
    "invalid_json", "missing_text", "empty_text", "nul_in_text", "text_not_string",
    "wrong_type_quality", "truncated_utf8", "not_an_object",
)
# fmt: on


def _corpus_record(rng: random.Random, i: int, text: str) -> dict:
    title = " ".join(rng.choice(_WORDS[:30]) for _ in range(4)).title()
    q = round(rng.betavariate(5, 2), 4)
    slug = title.lower().replace(" ", "-")
    return {
        "id": f"doc-{i:06d}",
        "text": text,
        "title": title,
        "url": f"https://www.{_SITES[i % len(_SITES)]}.com/{i // 50}/{slug}",
        "domain": rng.choice(_DOMAINS),
        "quality_prob": q,
        "quality_pred": "High" if q >= 0.8 else "Medium" if q >= 0.6 else "Low",
        "word_count": len(text.split()),
        "char_count": len(text),
        "language": "en",
        "raw_html": f"<p>{i}</p>",
    }


def _bad_line(kind: str, rec: dict) -> bytes:
    def dump(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    if kind == "invalid_json":
        return dump(rec)[:-25]
    if kind == "missing_text":
        return dump({k: v for k, v in rec.items() if k != "text"})
    if kind == "empty_text":
        return dump({**rec, "text": "   \n  "})
    if kind == "nul_in_text":
        return dump({**rec, "text": rec["text"][:10] + "\x00" + rec["text"][10:]})
    if kind == "text_not_string":
        return dump({**rec, "text": 12345})
    if kind == "wrong_type_quality":
        return dump({**rec, "quality_prob": "very good"})
    if kind == "truncated_utf8":
        line = dump({**rec, "text": rec["text"][:30] + " café"})
        cut = line.index("café".encode()) + 4  # keeps the first byte of the 2-byte "é"
        return line[:cut] + line[cut + 1 :]
    if kind == "not_an_object":
        return b"[1, 2, 3]"
    raise ValueError(kind)


def write_corpus(folder: Path, n_docs: int = 320, seed: int = 5) -> None:
    """Curated JSONL in three files (plain, gzip, plain), with bad records and blank lines.

    Every 23rd record is replaced by a bad line (cycling through ``_BAD_KINDS``); a few exact
    duplicate texts are planted (hash splits keep them together).
    """
    rng = random.Random(seed)
    texts = make_texts(n_docs, seed)
    for i in range(0, n_docs, 41):  # exact duplicates of an earlier text
        texts[i] = texts[max(i - 7, 0)]
    lines: list[bytes] = []
    for i, text in enumerate(texts):
        rec = _corpus_record(rng, i, text)
        if i % 23 == 11:
            lines.append(_bad_line(_BAD_KINDS[(i // 23) % len(_BAD_KINDS)], rec))
        else:
            lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode())
    lines.insert(40, b"   ")  # blank lines are counted, not rejected
    lines.insert(90, b"")
    folder.mkdir(parents=True, exist_ok=True)
    third = len(lines) // 3
    chunks = (lines[:third], lines[third : 2 * third], lines[2 * third :])
    (folder / "part-a.jsonl").write_bytes(b"\n".join(chunks[0]) + b"\n")
    data = b"\n".join(chunks[1]) + b"\n"
    (folder / "part-b.jsonl.gz").write_bytes(gzip.compress(data, mtime=0))
    (folder / "part-c.jsonl").write_bytes(b"\n".join(chunks[2]) + b"\n")


SCHEMA_YAML = """\
text: body
fields:
  body: text
  meta.title: title
  meta.url: url
  meta.quality: {from: quality_prob, type: float}
  meta.words: {from: word_count, type: int, required: true}
  meta.doc_id: {from: id, type: string}
  meta.domain: domain
static:
  meta.curation: regression
unmapped: metadata
drop: [raw_html]
stats: {domain: meta.domain, quality: meta.quality}
"""
# The same as JSON, without "unmapped: metadata" (which Parquet output refuses).
SCHEMA_JSON = {
    "text": "body",
    "fields": {
        "body": "text",
        "meta.title": "title",
        "meta.quality": {"from": "quality_prob", "type": "float"},
        "meta.words": {"from": "word_count", "type": "int", "required": True},
        "meta.flag": {"from": "language", "type": "string"},
    },
    "static": {"meta.curation": "regression"},
    "unmapped": "drop",
    "stats": {"quality": "meta.quality"},
}


def make_inputs(folder: Path) -> Path:
    """Write every input under ``folder`` (created); returns it.

    - ``tokenizer/``: the shipped byte-level BPE (copied).
    - ``ds.bin/.idx``: 400 documents tokenized with it, each + EOD, uint16 (dtype code 8).
    - ``ds32.bin/.idx``: the same tokens as int32 (dtype code 4).
    - ``corpus/``: 320 curated records in 3 JSONL files (one gzip), bad records, blank lines.
    - ``schema.yaml``: a schema file (rename, nest, types, static, unmapped, drop, stats);
      ``schema.json``: one for Parquet output (``unmapped: drop``).
    """
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = folder / "tokenizer"
    shutil.copytree(TOKENIZER_FILES, tok_dir)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    eod = tok.token_to_id("<|endoftext|>")
    encoded = tok.encode_batch(make_texts(400, seed=3), add_special_tokens=False)
    docs = [np.asarray([*e.ids, eod], np.int64) for e in encoded]
    write_megatron(folder / "ds", docs, np.uint16)
    write_megatron(folder / "ds32", docs, np.int32)
    write_corpus(folder / "corpus")
    (folder / "schema.yaml").write_text(SCHEMA_YAML, encoding="utf-8")
    (folder / "schema.json").write_text(json.dumps(SCHEMA_JSON, indent=2), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One case: dexport command lines run in order, or Python API calls.

    In ``commands`` (argument lists without ``dexport``), ``{in}`` and ``{out}`` stand for the
    inputs folder and the case's own output folder.

    ``api(inputs_dir, out_dir, client)`` runs Python API calls writing under ``out_dir``.
    """

    name: str
    commands: tuple[tuple[str, ...], ...] = ()
    api: Callable[[Path, Path, Any], None] | None = None


# The training run of the token cases: windows of 33 tokens, global batch 8, 160 samples asked
# (one epoch of the dataset is more: --all exports the whole epoch).
RUN = "--seq-len 32 --seed 7 --train-iters 20 --batch-size 8"
# Every training-order case builds its index files in its own output folder, so cases do not
# depend on each other or on their order (and the index files are compared too).
NEOX = f"{RUN} --index {{out}}/index/"
MEGATRON = f"{RUN} --convention megatron --index {{out}}/mcache/"
TEXT = "--text --tokenizer {in}/tokenizer"


def _command(line: str) -> tuple[str, ...]:
    """A command line as written in the tables below (``$NEOX`` etc. expanded)."""
    for name, value in (("$NEOX", NEOX), ("$MEGATRON", MEGATRON), ("$TEXT", TEXT)):
        line = line.replace(name, value)
    return tuple(shlex.split(line))


def _cli(name: str, *lines: str) -> Case:
    return Case(name, tuple(_command(line) for line in lines))


TOKEN_CASES = [
    # every format as a directory of parts (small --chunk-size: several parts), raw tokens
    _cli("tokens_jsonl_dir_all", "tokens {in}/ds $NEOX --all --out {out}/x --chunk-size 64"),
    _cli(
        "tokens_csv_dir_sequence_range_details",
        "tokens {in}/ds $NEOX --sequence-range 10:45 --doc-details --format csv --out {out}/x"
        " --chunk-size 16",
    ),
    _cli(
        "tokens_npz_dir_batches_details",
        "tokens {in}/ds $NEOX --batches 2,0 --doc-details --format npz --out {out}/x"
        " --chunk-size 8",
    ),
    _cli(
        "tokens_parquet_dir_batch_range_details",
        "tokens {in}/ds $NEOX --batch-range 1:4 --doc-details --format parquet --out {out}/x"
        " --chunk-size 16",
    ),
    _cli(
        "tokens_jsonl_dir_sequences",
        "tokens {in}/ds $NEOX --tokens --sequences 3,5,7,0,150 --format jsonl --out {out}/x"
        " --chunk-size 2",
    ),
    # text; one file of every kind
    _cli(
        "tokens_text_jsonl_file_batch_range_details",
        "tokens {in}/ds $NEOX $TEXT --batch-range 0:3 --doc-details --out {out}/b.jsonl"
        " --chunk-size 8",
    ),
    _cli(
        "tokens_text_csv_gz_file_sequences",
        "tokens {in}/ds $NEOX $TEXT --sequences 3,5,7,0 --doc-details --out {out}/s.csv.gz",
    ),
    _cli(
        "tokens_text_jsonl_zst_file_all",
        "tokens {in}/ds $NEOX $TEXT --all --out {out}/a.jsonl.zst --chunk-size 50",
    ),
    _cli(
        "tokens_text_npz_file_sequence_range",
        "tokens {in}/ds $NEOX $TEXT --sequence-range 0:40 --doc-details --out {out}/t.npz"
        " --chunk-size 16",
    ),
    _cli(
        "tokens_text_parquet_file_batches_details",
        "tokens {in}/ds $NEOX $TEXT --batches 4,1 --doc-details --out {out}/t.parquet"
        " --chunk-size 8",
    ),
    _cli(
        "tokens_csv_file_batch_range",
        "tokens {in}/ds $NEOX --batch-range 2:5 --out {out}/r.csv --chunk-size 8",
    ),
    _cli(
        "tokens_text_skip_special_jsonl_file",
        "tokens {in}/ds $NEOX $TEXT --skip-special-tokens --sequence-range 20:60"
        " --out {out}/k.jsonl --chunk-size 16",
    ),
    # nested batches
    _cli(
        "tokens_nested_jsonl_file_details",
        "tokens {in}/ds $NEOX --batches 5,2 --nested --doc-details --out {out}/n.jsonl"
        " --chunk-size 16",
    ),
    _cli(
        "tokens_nested_parquet_file_text",
        "tokens {in}/ds $NEOX $TEXT --batch-range 0:3 --nested --doc-details"
        " --out {out}/n.parquet --chunk-size 16",
    ),
    _cli(
        "tokens_nested_parquet_dir",
        "tokens {in}/ds $NEOX --batch-range 1:5 --nested --format parquet --out {out}/x"
        " --chunk-size 16",
    ),
    # compressed part directories
    _cli(
        "tokens_jsonl_dir_gzip",
        "tokens {in}/ds $NEOX --sequence-range 0:100 --compression gzip --out {out}/x"
        " --chunk-size 30",
    ),
    _cli(
        "tokens_text_csv_dir_gzip",
        "tokens {in}/ds $NEOX $TEXT --sequence-range 0:50 --format csv --compression gzip"
        " --out {out}/x --chunk-size 20",
    ),
    _cli(
        "tokens_text_jsonl_dir_zstd",
        "tokens {in}/ds $NEOX $TEXT --batch-range 0:4 --compression zstd --out {out}/x"
        " --chunk-size 16",
    ),
    # documents (no training order)
    _cli(
        "tokens_documents_text_jsonl_dir",
        "tokens {in}/ds $TEXT --documents 0:50 --out {out}/x --chunk-size 20",
    ),
    _cli(
        "tokens_documents_npz_file",
        "tokens {in}/ds --documents 10:60 --out {out}/d.npz --chunk-size 16",
    ),
    _cli(
        "tokens_documents_text_parquet_file",
        "tokens {in}/ds $TEXT --documents 0:400 --out {out}/d.parquet --chunk-size 100",
    ),
    _cli("tokens_documents_csv_file", "tokens {in}/ds --documents 5:25 --out {out}/d.csv"),
    # int32 dataset (dtype code 4)
    _cli(
        "tokens_int32_npz_dir_all",
        "tokens {in}/ds32 $NEOX --all --format npz --out {out}/x --chunk-size 100",
    ),
    _cli(
        "tokens_int32_parquet_file_documents",
        "tokens {in}/ds32 --documents 0:30 --out {out}/d.parquet",
    ),
    # other GPT-NeoX runs: another split with --num-samples; pack_until_overflow
    _cli(
        "tokens_neox_valid_split_num_samples",
        "tokens {in}/ds --seq-len 16 --seed 3 --num-samples 30 --splits 90,10,0 --split valid"
        " --index {out}/index/ --all --out {out}/v.jsonl",
    ),
    _cli(
        "tokens_neox_pack_until_overflow",
        "tokens {in}/ds --seq-len 24 --seed 9 --num-samples 60 --packing pack_until_overflow"
        " --index {out}/index/ --all --doc-details --out {out}/p.jsonl",
    ),
    # megatron-core convention (its cache files are built under --index)
    _cli(
        "tokens_megatron_jsonl_file_batch_range",
        "tokens {in}/ds $MEGATRON --batch-range 0:2 --doc-details --out {out}/mg.jsonl",
    ),
    _cli(
        "tokens_megatron_text_parquet_dir_all",
        "tokens {in}/ds $MEGATRON $TEXT --all --format parquet --out {out}/x --chunk-size 100",
    ),
    _cli(
        "tokens_megatron_no_extra_token_npz_file",
        "tokens {in}/ds $MEGATRON --no-extra-token --sequences 1,9,4 --out {out}/m.npz",
    ),
    _cli(
        "tokens_megatron_one_epoch_nested_jsonl_dir",
        "tokens {in}/ds --convention megatron --seq-len 32 --seed 5 --batch-size 8"
        " --index {out}/mcache/ --batches 3,1 --nested --format jsonl --out {out}/x"
        " --chunk-size 8",
    ),
]

CORPUS = "corpus {in}/corpus --out {out}/export"
CORPUS_CASES = [
    _cli("corpus_jsonl_default", f"{CORPUS} --chunk-size 24k"),
    _cli("corpus_parquet", f"{CORPUS} --format parquet --chunk-size 24k --seed 7"),
    _cli("corpus_parts_gzip", f"{CORPUS} --parts --compression gzip --chunk-size 24k"),
    _cli(
        "corpus_zstd_no_card_two_splits",
        f"{CORPUS} --compression zstd --no-card --split 0.8,0.2",
    ),
    _cli(
        "corpus_exact_counts_split_key",
        f"{CORPUS} --exact-counts --split train=rest,validation=20,test=10 --split-key id"
        " --chunk-size 24k",
    ),
    _cli(
        "corpus_schema_set_tokenizer",
        f"{CORPUS} --schema {{in}}/schema.yaml --set meta.source=regression --set meta.batch=b1"
        " --tokenizer {in}/tokenizer --split train=0.9,dev=0.05,test=0.05 --chunk-size 24k",
    ),
    _cli(
        "corpus_parquet_schema_parts",
        f"{CORPUS} --schema {{in}}/schema.json --format parquet --parts --exact-counts"
        " --chunk-size 24k",
    ),
]

STATS_CASES = [
    _cli(
        "stats_corpus_export",
        f"{CORPUS} --no-card --chunk-size 24k",
        "stats {out}/export --output {out}/stats.json",
        "stats {out}/export --tokenizer {in}/tokenizer --output {out}/stats_tokens.json",
    ),
]

ENCODE_CASES = [
    _cli(
        "encode_megatron_append_eod",
        "encode {in}/corpus --tokenizer {in}/tokenizer --append-eod --out {out}/data/ds"
        " --partition-size 24KiB",
    ),
    _cli(
        "encode_npz",
        "encode {in}/corpus --tokenizer {in}/tokenizer/tokenizer.json --format npz"
        " --out {out}/npz --partition-size 24KiB",
    ),
    _cli(
        "encode_megatron_field_bos_eod_id",
        "encode {in}/corpus/part-a.jsonl --tokenizer {in}/tokenizer --field title --add-bos"
        " --append-eod --eod-id 3 --out {out}/title",
    ),
    # corpus export -> encode its train split -> export the encoded documents back as text
    _cli(
        "corpus_encode_tokens_round_trip",
        f"{CORPUS} --no-card",
        "encode {out}/export/train.jsonl --tokenizer {in}/tokenizer --append-eod"
        " --out {out}/data/train",
        "tokens {out}/data/train $TEXT --skip-special-tokens --documents 0:100"
        " --out {out}/back.jsonl",
    ),
]


def _api_manager(convention: str) -> Callable[[Path, Path, Any], None]:
    def call(inputs: Path, out: Path, client: Any) -> None:
        from pipeline import DatasetManager

        tok = str(inputs / "tokenizer")
        index = str(out / "index" / "ds") if convention == "neox" else str(out / "mcache") + "/"
        with DatasetManager(client=client) as manager:
            manager.setup_edit_inspect_sample_export(
                str(inputs / "ds"), index, 20, 8, 32, 7, convention=convention
            )
            ex = manager.export
            ex.export_sequences([4, 2], str(out / "s.jsonl"), tokenizer=tok)
            ex.export_sequence_range(
                3, 9, str(out / "r.csv"), format_type="csv", tokenizer=tok, include_doc_details=True
            )
            ex.export_batches([1, 3], 8, str(out / "b.jsonl"), tokenizer=tok)  # nested default
            ex.export_batch_range(
                0,
                2,
                8,
                str(out / "br.parquet"),
                format_type="parquet",
                tokenizer=tok,
                flatten_batches=True,
                include_doc_details=True,
            )
            ex.export_dataset_range(
                10,
                30,
                str(out / "dr") + "/",
                format_type="npz",
                return_detokenized=False,
                chunk_size=7,
            )
            ex.export_entire_dataset(
                str(out / "all") + "/",
                format_type="parquet",
                return_detokenized=False,
                chunk_size=100,
            )
            ex.export_documents(0, 20, str(out / "docs.jsonl"), tokenizer=tok, chunk_size=6)

    return call


def _api_export_corpus(inputs: Path, out: Path, client: Any) -> None:
    from pipeline import export_corpus

    schema = {
        "text": "text",
        "fields": {
            "text": "text",
            "metadata.title": "title",
            "metadata.quality": {"from": "quality_prob", "type": "float"},
        },
        "static": {"metadata.source": "api"},
        "stats": {"quality": "metadata.quality"},
    }
    export_corpus(
        [str(inputs / "corpus")],
        str(out / "export"),
        schema=schema,
        set_values=["metadata.lang=en"],
        split="train=rest,test=25",
        seed=3,
        exact_counts=True,
        chunk_size=24 << 10,
        client=client,
    )
    export_corpus(
        str(inputs / "corpus"),
        str(out / "export_parquet"),
        format="parquet",
        parts=True,
        split="0.9,0.1",
        seed=11,
        card=False,
        client=client,
    )


def _api_encode_corpus(inputs: Path, out: Path, client: Any) -> None:
    from pipeline import encode_corpus

    encode_corpus(
        [str(inputs / "corpus")],
        str(out / "data" / "ds"),
        tokenizer=str(inputs / "tokenizer"),
        append_eod=True,
        partition_bytes=24 << 10,
        client=client,
    )
    encode_corpus(
        str(inputs / "corpus" / "part-c.jsonl"),
        str(out / "npz"),
        tokenizer=str(inputs / "tokenizer"),
        format="npz",
        client=client,
    )


API_CASES = [
    Case("api_manager_neox", api=_api_manager("neox")),
    Case("api_manager_megatron", api=_api_manager("megatron")),
    Case("api_export_corpus", api=_api_export_corpus),
    Case("api_encode_corpus", api=_api_encode_corpus),
]

CASES = [*TOKEN_CASES, *CORPUS_CASES, *STATS_CASES, *ENCODE_CASES, *API_CASES]
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"

# Commands that take cluster flags (--scheduler); the others (stats) run on the driver.
_CLUSTER_COMMANDS = {"tokens", "corpus", "encode"}


def _argv(command: tuple[str, ...], inputs: Path, out: Path, scheduler: str) -> list[str]:
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in command]
    if argv[0] in _CLUSTER_COMMANDS:
        argv += ["--scheduler", scheduler]
    return argv


def run_case(case: Case, inputs_dir: Path, out_dir: Path, scheduler_address: str) -> None:
    """Run ``case`` in-process against the Dask scheduler at ``scheduler_address``.

    ``out_dir`` must not exist yet or be empty; every file the case writes goes under it.
    """
    inputs_dir, out_dir = Path(inputs_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if case.api is not None:
        from distributed import Client

        with Client(scheduler_address, set_as_default=False) as client:
            case.api(inputs_dir, out_dir, client)
        return
    from pipeline.cli import main

    for command in case.commands:
        argv = _argv(command, inputs_dir, out_dir, scheduler_address)
        status = main(argv)
        if status != 0:
            raise AssertionError(f"{case.name}: dexport {' '.join(argv)} exited {status}")


# ----------------------------------------------------------------------------------------------
# Digests
# ----------------------------------------------------------------------------------------------


def digest_tree(out_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``out_dir``, sorted by path.

    The bytes are hashed exactly as written, manifests (``_manifest.json``,
    ``*.manifest.json``), dataset cards (``README.md``) and ``dataset_stats.json`` included:
    no normalization is needed and none is done. The absolute paths these files record are
    the same on every run because every case runs under :data:`FIXED_ROOT` (see there), and
    none of them records a time stamp or a duration (the ``seconds`` of a run are only
    printed; checked by running every case twice and comparing).
    """
    out_dir = Path(out_dir)
    result = {}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        result[path.relative_to(out_dir).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(result.items()))


def diff_digests(expected: dict[str, str], got: dict[str, str]) -> str:
    """A readable list of the files that are missing, unexpected or changed ('' when equal)."""
    lines = []
    for rel in sorted(set(expected) | set(got)):
        if rel not in got:
            lines.append(f"  missing:    {rel}")
        elif rel not in expected:
            lines.append(f"  unexpected: {rel}")
        elif expected[rel] != got[rel]:
            lines.append(f"  changed:    {rel} ({expected[rel][:12]} -> {got[rel][:12]})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Writing the expected digests
# ----------------------------------------------------------------------------------------------


# Every case reads its inputs from FIXED_ROOT/in and writes to FIXED_ROOT/out/<case>: the same
# absolute paths on every run. They cannot be normalized away afterwards: dexport records the
# absolute input file of each rejected record in the rejects files (whose sha256 and size are in
# the manifests), megatron-core cache files are named after an md5 of a description holding the
# dataset path, and manifests/cards record inputs, outputs and the command line. FIXED_ROOT is a
# symbolic link to the real (temporary) folder of the run; dexport records paths as given, without
# resolving links. A lock serializes runs on one machine, since they share the link.
FIXED_ROOT = Path("/tmp/dexport-regression")
_LOCK = Path("/tmp/dexport-regression.lock")


@contextlib.contextmanager
def fixed_root(real_dir: Path) -> Iterator[Path]:
    """Point :data:`FIXED_ROOT` at ``real_dir`` (created) while the block runs; yields it."""
    import fcntl

    real_dir = Path(real_dir).resolve()
    real_dir.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another run on this machine to finish
        try:
            if FIXED_ROOT.is_symlink():
                FIXED_ROOT.unlink()
            elif FIXED_ROOT.exists():
                raise RuntimeError(f"{FIXED_ROOT} exists and is not a symbolic link; remove it")
            FIXED_ROOT.symlink_to(real_dir, target_is_directory=True)
            yield FIXED_ROOT
        finally:
            if FIXED_ROOT.is_symlink():
                FIXED_ROOT.unlink()
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_all(root: Path, scheduler_address: str, names: list[str] | None = None) -> dict:
    """Make the inputs under ``root/in`` and run every case into ``root/out/<case>``."""
    inputs = make_inputs(root / "in")
    digests = {}
    for case in CASES:
        if names and case.name not in names:
            continue
        t0 = time.perf_counter()
        out = root / "out" / case.name
        run_case(case, inputs, out, scheduler_address)
        digests[case.name] = digest_tree(out)
        print(
            f"{case.name}: {len(digests[case.name])} files, {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return dict(sorted(digests.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {EXPECTED.name}")
    parser.add_argument("--output", type=Path, help="write the digests here instead")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    args = parser.parse_args(argv)
    if args.write and args.case:
        parser.error("--write needs every case; use --output with --case")
    import logging

    from distributed import Client, LocalCluster

    import pipeline

    print(f"dexport code: {Path(pipeline.__file__).parent}", file=sys.stderr)
    real = args.keep or Path(tempfile.mkdtemp(prefix="dexport-regression-"))
    try:
        with (
            fixed_root(real) as root,
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
                local_directory=str(real / "dask"),
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            where = client.run(lambda: __import__("pipeline").__file__)
            print(f"workers run: {sorted(set(where.values()))}", file=sys.stderr)
            digests = run_all(root, cluster.scheduler_address, args.case)
    finally:
        if args.keep is None:
            shutil.rmtree(real, ignore_errors=True)
    text = json.dumps(digests, indent=2, sort_keys=True) + "\n"
    target = args.output or (EXPECTED if args.write else None)
    if target is None:
        sys.stdout.write(text)
    else:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target} ({len(digests)} cases)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
