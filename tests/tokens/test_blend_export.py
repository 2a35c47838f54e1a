"""Blended token exports end to end: command line (each framework's syntax and a GPT-NeoX YAML
config), the four formats with ``dataset``/``dataset_sample_id``, text, resume, S3, the Python
API, and the mistakes a user makes with blends (one line, exit 2, nothing written)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline import DatasetManager, megatron_blend, neox_blend, read_neox_config
from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder
from pipeline.tokens.source import TrainingRun, open_sample_order
from tests.tokens.test_mistakes import fails

SEQ_LEN, SEED, ITERS, BATCH = 32, 7, 20, 8
WEIGHTS = (0.5, 0.3, 0.2)


@pytest.fixture(scope="module")
def data(tmp_path_factory, byte_bpe_tokenizer_path) -> dict:  # noqa: F811
    """Three datasets of real text (uint16, uint16, int32) and the blend over them."""
    root = tmp_path_factory.mktemp("blend")
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    prefixes = []
    for k, (lines, dtype) in enumerate(((300, np.uint16), (120, np.uint16), (60, np.int32))):
        prefix = str(root / f"d{k}")
        builder = IndexedDatasetBuilder(prefix, dtype)
        for ids in tok(multilingual_text(lines, seed=k), add_special_tokens=False)["input_ids"]:
            builder.add_document(np.asarray([*ids, tok.eos_token_id]))
        builder.finalize()
        prefixes.append(prefix)
    blend = neox_blend(
        {"train": prefixes, "valid": prefixes[:1], "test": prefixes[1:2]},
        {"train": WEIGHTS, "valid": None, "test": None},
    )
    return {"root": root, "prefixes": prefixes, "blend": blend, "tok": str(byte_bpe_tokenizer_path)}


def _flags(data: dict) -> list[str]:
    p = data["prefixes"]
    return [
        "--train-data-paths", *p, "--train-data-weights", *map(str, WEIGHTS),
        "--valid-data-paths", p[0], "--test-data-paths", p[1],
        "--seq-len", str(SEQ_LEN), "--seed", str(SEED),
        "--train-iters", str(ITERS), "--batch-size", str(BATCH),
    ]  # fmt: skip


def _order(data: dict, **kw):
    run = TrainingRun(
        seq_len=SEQ_LEN, seed=SEED, train_iters=ITERS, batch_size=BATCH, blend=data["blend"], **kw
    )
    return open_sample_order(None, run)


def _read(path: Path, fmt: str) -> dict:
    """index, tokens (rows), dataset, dataset_sample_id and doc details of one output file."""
    if fmt == "jsonl":
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        out = {
            k: [r[k] for r in rows] for k in ("index", "content", "dataset", "dataset_sample_id")
        }
        out["doc_index_f"] = [r["doc_details"]["doc_index_f"] for r in rows]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        out = {
            k: [r[k] for r in rows] for k in ("index", "content", "dataset", "dataset_sample_id")
        }
        out["content"] = [json.loads(c) for c in out["content"]]
        out["doc_index_f"] = [r["doc_index_f"] for r in rows]
    elif fmt == "npz":
        z = np.load(path, allow_pickle=False)
        out = {"index": z["index"], "content": z["tokens"], "dataset": z["dataset"]}
        out |= {"dataset_sample_id": z["dataset_sample_id"], "doc_index_f": z["doc_index_f"]}
    else:
        t = pq.read_table(path).to_pydict()
        out = {k: t[k] for k in ("index", "content", "dataset", "dataset_sample_id")}
        out["doc_index_f"] = [d["doc_index_f"] for d in t["doc_details"]]
    return {k: np.asarray(v).astype(str if k == "dataset" else np.int64) for k, v in out.items()}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "npz", "parquet"])
def test_formats_carry_the_source(data: dict, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"b.{fmt}"
    argv = ["tokens", *_flags(data), "--batch-range", "2:5", "--doc-details", "--out", out]
    assert main([str(a) for a in argv]) == 0
    got = _read(out, fmt)
    order = _order(data)
    ids = np.arange(2 * BATCH, 5 * BATCH)
    np.testing.assert_array_equal(got["index"], ids)
    np.testing.assert_array_equal(got["content"], order.windows(None, ids))
    names, sample_ids = order.provenance(ids)
    assert got["dataset"].tolist() == names.tolist()
    assert set(names.tolist()) == set(data["prefixes"])  # every dataset (and dtype) read
    np.testing.assert_array_equal(got["dataset_sample_id"], sample_ids)
    np.testing.assert_array_equal(got["doc_index_f"], order.doc_details(ids)["doc_index_f"])


@pytest.mark.parametrize("out_name", ["b.csv", "folder"])
@pytest.mark.parametrize("content", [[], ["--text"]])
def test_csv_exports_validate(
    data: dict, tmp_path: Path, capsys, out_name: str, content: list
) -> None:
    """``dataset`` is text and ``dataset_sample_id`` an integer: blended CSV validates."""
    out = tmp_path / out_name
    text = [*content, "--tokenizer", data["tok"]] if content else []
    argv = ["tokens", *_flags(data), "--batch-range", "0:2", "--doc-details", *text]
    assert main([str(a) for a in [*argv, "--format", "csv", "--out", out]]) == 0
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0, capsys.readouterr()
    report = capsys.readouterr().out
    assert f"{2 * BATCH} documents, 0 errors" in report and "PASSED" in report


def test_config_file_equals_flags(data: dict, tmp_path: Path) -> None:
    p = data["prefixes"]
    config = tmp_path / "neox.yml"
    config.write_text(
        # GPT-NeoX writes keys with either - or _; train_batch_size from micro x accumulation.
        json.dumps(
            {
                "train-data-paths": p,
                "train-data-weights": list(WEIGHTS),
                "valid-data-paths": p[:1],
                "test-data-paths": p[1:2],
                "seq_length": SEQ_LEN,
                "seed": SEED,
                "train_iters": ITERS,
                "train_micro_batch_size_per_gpu": BATCH // 2,
                "gradient_accumulation_steps": 2,
                "data_parallel_size": 1,
            }
        )  # fmt: skip
    )
    assert read_neox_config([str(config)])["train_batch_size"] == BATCH
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["tokens", *_flags(data), "--batches", "0,7", "--out", str(a)]) == 0
    assert main(["tokens", "--config", str(config), "--batches", "0,7", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_text_and_resume(data: dict, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(data["tok"])
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = [*_flags(data), "--all", "--text", "--tokenizer", data["tok"], "--chunk-size", "40"]
    assert main(["tokens", *args, "--out", str(full)]) == 0
    rows = [orjson.loads(line) for line in (full / "part-00001.jsonl").read_bytes().splitlines()]
    windows = _order(data).windows(None, np.array([r["index"] for r in rows]))
    assert [r["content"] for r in rows] == tok.batch_decode(windows.tolist())
    # An interrupted run (parts after the second and the manifest gone) finishes on --resume.
    assert main(["tokens", *args, "--out", str(cut)]) == 0
    manifest = json.loads((cut / "_manifest.json").read_text())
    progress = cut / ".dexport-progress"
    progress.mkdir()
    (progress / "params.json").write_text(json.dumps(manifest["parameters"], sort_keys=True))
    from pipeline.runtime.output import canonical_json

    (progress / "params.json").write_bytes(canonical_json(manifest["parameters"]))
    for f in manifest["files"][:2]:
        (progress / f"{f['path']}.json").write_bytes(canonical_json(f))
    for f in manifest["files"][2:]:
        (cut / f["path"]).unlink()
    (cut / "_manifest.json").unlink()
    assert main(["tokens", *args, "--out", str(cut), "--resume"]) == 0
    assert {p.name: p.read_bytes() for p in cut.iterdir()} == {
        p.name: p.read_bytes() for p in full.iterdir()
    }


def test_s3_matches_local(data: dict, tmp_path: Path, s3_bucket: str, s3_server) -> None:
    fs = s3_server.filesystem()
    remote = []
    for k, prefix in enumerate(data["prefixes"]):
        for ext in (".bin", ".idx"):
            fs.put(prefix + ext, f"{s3_bucket}/data/d{k}{ext}")
        remote.append(f"{s3_bucket}/data/d{k}")
    options = json.dumps(s3_server.storage_options)
    common = [
        "--seq-len", str(SEQ_LEN), "--seed", str(SEED), "--num-samples", "100",
        "--convention", "megatron", "--splits", "90,5,5", "--sequence-range", "10:90",
        "--format", "parquet",
    ]  # fmt: skip
    local = tmp_path / "local"
    data_path = [x for w, p in zip(("2", "1"), data["prefixes"][:2], strict=True) for x in (w, p)]
    assert main(["tokens", "--data-path", *data_path, *common, "--out", str(local)]) == 0
    data_path_s3 = [x for w, p in zip(("2", "1"), remote[:2], strict=True) for x in (w, p)]
    argv = ["tokens", "--data-path", *data_path_s3, *common, "--storage-options", options]
    assert main([*argv, "--out", f"{s3_bucket}/out"]) == 0
    part = pq.read_table(local / "part-00000.parquet").to_pydict()
    assert {Path(d).name for d in part["dataset"]} == {"d0", "d1"}
    remote_part = pq.read_table(io.BytesIO(fs.cat_file(f"{s3_bucket}/out/part-00000.parquet")))
    assert remote_part.column("content").to_pylist() == part["content"]
    assert [Path(d).name for d in remote_part.column("dataset").to_pylist()] == [
        Path(d).name for d in part["dataset"]
    ]


def test_api(data: dict, tmp_path: Path) -> None:
    order = _order(data)
    with DatasetManager() as manager:
        manager.setup_edit_inspect_sample_export(
            None, str(tmp_path / "index"), ITERS, BATCH, SEQ_LEN, SEED, blend=data["blend"]
        )
        batch = manager.sample.get_batches_by_ids([3], BATCH, return_doc_details=True)[0]
        ids = np.arange(3 * BATCH, 4 * BATCH)
        names, sample_ids = order.provenance(ids)
        for (segments, details), window, name, j in zip(
            batch, order.windows(None, ids), names, sample_ids, strict=True
        ):
            np.testing.assert_array_equal(np.concatenate(segments), window)
            assert details["dataset"] == name and details["dataset_sample_id"] == j
        out = tmp_path / "x.jsonl"
        manager.export.export_batch_range(
            3, 4, BATCH, str(out), return_detokenized=False, flatten_batches=True
        )
        rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        assert [r["dataset"] for r in rows] == names.tolist()
        with pytest.raises(ValueError, match="exactly one"):
            DatasetManager().setup_edit_inspect_sample_export(
                data["prefixes"][0], None, ITERS, BATCH, SEQ_LEN, SEED, blend=data["blend"]
            )
    # megatron's syntax through the API too
    blend = megatron_blend(["0.6", data["prefixes"][0], "0.4", data["prefixes"][1]])
    with DatasetManager() as manager:
        manager.setup_edit_inspect_sample_export(
            None, None, ITERS, BATCH, SEQ_LEN, SEED, splits_string="90,5,5", blend=blend
        )
        assert manager.order.convention == "megatron" and len(manager.order) == ITERS * BATCH


def test_inspect_shows_composition(data: dict, capsys) -> None:
    assert main(["inspect", *_flags(data), "--sequence", "5"]) == 0
    out = capsys.readouterr().out
    assert "blend      3 datasets (neox), split train" in out
    for k, prefix in enumerate(data["prefixes"]):
        assert f"dataset {k}  {prefix}: weight" in out
    assert "dataset_sample_id=" in out


@pytest.mark.parametrize(
    "change, match",
    [
        (["--train-data-weights", "1", "2"], r"train: 2 weights for 3 data paths"),
        (["--valid-data-paths"], r"valid and test data paths"),
        (["--data-path", "1", "x"], r"two syntaxes"),
        (["--documents", "0:3"], r"--documents exports one dataset"),
        (["PREFIX"], r"not both"),
        (["--convention", "megatron"], r"blend is written in neox's syntax"),
    ],
)
def test_mistakes(data: dict, tmp_path: Path, capsys, change: list, match: str) -> None:
    argv = _flags(data)
    out = tmp_path / "out"
    if change[0] == "--train-data-weights":
        at = argv.index("--train-data-weights")
        argv = argv[:at] + change + argv[at + 4 :]
    elif change == ["--valid-data-paths"]:
        at = argv.index("--valid-data-paths")
        argv = argv[:at] + argv[at + 4 :]  # no valid nor test paths
    elif change == ["PREFIX"]:
        argv = [data["prefixes"][0], *argv]
    else:
        argv = argv + change
    selection = [] if "--documents" in change else ["--batch-range", "0:1"]
    before = sorted(data["root"].iterdir())
    fails(capsys, ["tokens", *argv, *selection, "--out", out], match)
    assert not out.exists()
    assert sorted(data["root"].iterdir()) == before  # no index was written either


def test_config_single_data_path(data: dict, tmp_path: Path) -> None:
    """A GPT-NeoX config without a blend names one dataset (data_path, split) instead."""
    config = tmp_path / "one.yml"
    config.write_text(
        f"data_path: {data['prefixes'][0]}\nsplit: '90,5,5'\nseq-length: {SEQ_LEN}\n"
        f"seed: {SEED}\ntrain_iters: {ITERS}\ntrain_batch_size: {BATCH}\n"
    )
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    flags = ["--seq-len", SEQ_LEN, "--seed", SEED, "--train-iters", ITERS, "--batch-size", BATCH]
    argv = ["tokens", data["prefixes"][0], *flags, "--splits", "90,5,5", "--batches", "1"]
    assert main([str(x) for x in [*argv, "--out", a]]) == 0
    assert main(["tokens", "--config", str(config), "--batches", "1", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert b"dataset" not in b.read_bytes()  # single-dataset records are unchanged
