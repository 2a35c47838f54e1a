"""The corpus, encode and token partitions computed through each backend write the same bytes.

Every job puts the Backend it resolved into its tasks; here the tasks get the CPU backend (the
default path), a backend whose array namespace is ``array_api_strict`` (any call outside the
array API standard fails there, as it would on CuPy) and, on a machine with a device, the GPU
backend. The outputs must be byte-identical: splits, rejects, statistics, card, manifest,
``.bin``/``.idx`` and token parts.
"""

from __future__ import annotations

import json
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
from corpus_helpers import sample, tree_bytes
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from gpu.backend import CPU, Backend, gpu_available, resolve_backend
from pipeline.corpus.job import CorpusExport, plan_corpus_export, run_corpus_export
from pipeline.corpus.splits import parse_split
from pipeline.encode.job import EncodeJob, run_encode
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder
from pipeline.runtime.executor import open_executor
from pipeline.tokens.job import TokenExport, run_token_export
from pipeline.tokens.source import TrainingRun

STRICT = Backend(name="strict", array="array_api_strict", frame="pandas")
BACKENDS = [
    pytest.param("strict", id="array_api_strict"),
    pytest.param("gpu", id="gpu", marks=pytest.mark.gpu),
]


def _backend(name: str) -> Backend:
    return STRICT if name == "strict" else resolve_backend(name)


# Texts that stress the counting kernels: multi-byte characters, emoji, control characters
# and Unicode whitespace inside words, a surrogate (rejected), duplicates (same split).
ODD_TEXTS = [
    "café naïve über",
    "emoji🙂 and 日本語テキスト",
    "tab\tnew\nline\x0bvertical\x1funit",
    "no\u00a0break\u3000ideographic space",
    "\ud800 lone surrogate",
    "x",
    "x",
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated records with planted bad ones, plus the odd texts, in two files."""
    root = tmp_path_factory.mktemp("backend-corpus")
    sample.generate(str(root / "gen"), docs=300, bad=30, blank=2, seed=5, mean_words=80)
    with open(root / "odd.jsonl", "w", encoding="utf-8", errors="surrogatepass") as f:
        for i, text in enumerate(ODD_TEXTS):
            record = {"id": f"odd-{i}", "text": text, "domain": "Odd", "quality_score": 0.5 + i}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return root


def _corpus(corpus_dir: Path, out: Path, backend: str | Backend, split: str, **kw) -> dict:
    spec = CorpusExport(
        inputs=[str(corpus_dir)],
        out=str(out),
        split=parse_split(split, seed=3, exact="=" in split and "rest" in split, **kw),
        chunk_size=40_000,  # several partitions, several batches
        backend=backend,
    )
    plan = plan_corpus_export(spec)
    with open_executor(in_process=True) as executor:
        return run_corpus_export(plan, executor, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("split", "key"),
    [
        ("0.8,0.1,0.1", None),  # hash mode on the text
        ("0.7,0.3", "id"),  # hash mode on a key field
        ("train=rest,validation=40,test=30", None),  # exact counts (ranking pass)
    ],
)
def test_corpus_export_same_bytes_on_every_backend(
    corpus_dir: Path, tmp_path: Path, backend: str, split: str, key: str | None
) -> None:
    want = _corpus(corpus_dir, tmp_path / "cpu" / "out", "cpu", split, key=key)
    got = _corpus(corpus_dir, tmp_path / "other" / "out", _backend(backend), split, key=key)
    assert got["splits"] == want["splits"] and want["rejected"] > 0
    expected = tree_bytes(tmp_path / "cpu")
    assert tree_bytes(tmp_path / "other") == expected
    assert "out/dataset_stats.json" in expected and "out/rejects/part-00000.jsonl" in expected


def test_corpus_backend_travels_to_dask_workers(corpus_dir: Path, tmp_path: Path, dask_client):
    """The task pickles its Backend by module names; workers compute with the same one."""
    outs = []
    for name, backend in (("cpu", CPU), ("strict", STRICT)):
        spec = CorpusExport(
            inputs=[str(corpus_dir)],
            out=str(tmp_path / name / "out"),
            chunk_size=40_000,
            backend=backend,
        )
        run_corpus_export(plan_corpus_export(spec), dask_client, progress=False)
        outs.append(tree_bytes(tmp_path / name))
    assert outs[0] == outs[1]


@pytest.fixture(scope="module")
def encode_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backend-encode")
    texts = multilingual_text(120, seed=9)
    rows = [{"text": t} for t in texts] + [{"text": ""}, {"body": "no text"}, {"text": 7}]
    with open(root / "a.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return root


def _encode(inputs: Path, out: Path, backend: Backend, tokenizer: Path, **kw) -> None:
    job = EncodeJob(
        inputs=[str(inputs)],
        out=str(out),
        tokenizer=str(tokenizer),
        partition_bytes=6 << 10,  # several shards
        **kw,
    )
    job.check()
    job.compute = backend  # what --backend would have resolved to
    with open_executor(in_process=True) as executor:
        run_encode(job, executor, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "options",
    [
        {"append_eod": True, "add_bos": True},
        {"append_eod": True},
        {},
        {"format": "npz", "append_eod": True},
    ],
    ids=["bos+eod", "eod", "plain", "npz"],
)
def test_encode_same_bytes_on_every_backend(
    encode_dir: Path,
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    backend: str,
    options: dict,
) -> None:
    trees = []
    for name, chosen in (("cpu", CPU), ("other", _backend(backend))):
        _encode(encode_dir, tmp_path / name / "ds", chosen, byte_bpe_tokenizer_path, **options)
        trees.append(tree_bytes(tmp_path / name))
    assert trees[0] == trees[1] and trees[0]


def test_encode_bos_eod_on_the_strict_namespace_matches_the_tokenizer(
    byte_bpe_tokenizer_path: Path,  # noqa: F811
) -> None:
    from pipeline.encode import tokenize as ts
    from pipeline.formats.tokenizer import load_tokenizer

    payload = load_tokenizer(byte_bpe_tokenizer_path)
    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    options = ts.EncodeOptions(eod_id=tok.eos_token_id, bos_id=5)
    texts = ["a", "hello world", "日本語", " x "]
    part = ts.tokenize_records([{"text": t} for t in texts], payload, options, np.uint16, STRICT)
    assert part.tokens.__array_namespace__() is array_api_strict
    tokens, offsets = np.asarray(part.tokens), np.asarray(part.offsets)
    docs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(part.documents)]
    assert docs == [[5, *tok(t)["input_ids"], tok.eos_token_id] for t in texts]


@pytest.fixture(scope="module")
def token_dataset(tmp_path_factory, byte_bpe_tokenizer_path) -> str:  # noqa: F811
    root = tmp_path_factory.mktemp("backend-tokens")
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    prefix = str(root / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for ids in tok(multilingual_text(200, seed=4), add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, tok.eos_token_id]))
    builder.finalize()
    return prefix


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_token_export_same_bytes_on_every_backend(
    token_dataset: str,
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    backend: str,
    fmt: str,
) -> None:
    trees = []
    for name, chosen in (("cpu", "cpu"), ("other", _backend(backend))):
        spec = TokenExport(
            prefix=token_dataset,
            out=str(tmp_path / name / "out"),
            selection_kind="all",
            run=TrainingRun(seq_len=32, seed=7, train_iters=10, batch_size=8, splits="100,0,0"),
            content="text",
            tokenizer=str(byte_bpe_tokenizer_path),
            format=fmt,
            chunk_size=30,
            backend=chosen,
        )
        with open_executor(in_process=True) as executor:
            run_token_export(spec, executor, progress=False)
        trees.append(tree_bytes(tmp_path / name))
    assert trees[0] == trees[1] and len(trees[0]) > 3


needs_no_gpu = pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU backend")


@needs_no_gpu
@pytest.mark.parametrize("job", ["corpus", "encode"])
def test_gpu_backend_without_device_exits_2_with_one_line(
    job: str,
    corpus_dir: Path,
    tmp_path: Path,
    capsys,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
) -> None:
    from pipeline.cli import main

    out = tmp_path / "out"
    extra = ["--tokenizer", str(byte_bpe_tokenizer_path)] if job == "encode" else []
    rc = main([job, str(corpus_dir / "odd.jsonl"), "--out", str(out), "--backend", "gpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "backend 'gpu' needs" in err[0] and "--backend cpu" in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists() and not list(tmp_path.glob("out.*"))


@needs_no_gpu
def test_api_backend_gpu_without_device_is_a_backend_error(
    token_dataset: str,
    tmp_path: Path,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
    encode_dir: Path,
    corpus_dir: Path,
) -> None:
    from gpu.errors import BackendError
    from pipeline import DatasetManager, export_corpus
    from pipeline.encode.api import encode_corpus

    with DatasetManager(backend="gpu") as manager:
        manager.setup_edit_inspect_sample_export(
            dataset_prefix=token_dataset,
            batch_info_save_prefix=str(tmp_path / "index" / "run"),
            train_iters=10,
            train_batch_size=8,
            train_seq_len=32,
            seed=7,
            splits_string="100,0,0",
        )
        with pytest.raises(BackendError, match="backend 'gpu' needs"):
            manager.export.export_batch_range(
                0, 2, 8, str(tmp_path / "t.jsonl"), tokenizer=str(byte_bpe_tokenizer_path)
            )
    with pytest.raises(BackendError, match="backend 'gpu' needs"):
        export_corpus([str(corpus_dir / "odd.jsonl")], str(tmp_path / "c"), backend="gpu")
    with pytest.raises(BackendError, match="backend 'gpu' needs"):
        encode_corpus(
            str(encode_dir),
            tmp_path / "e" / "ds",
            tokenizer=byte_bpe_tokenizer_path,
            backend="gpu",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # the cached sample index
