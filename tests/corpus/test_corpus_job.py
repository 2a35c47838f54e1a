"""The corpus export end to end on a real Dask cluster: workshop flow, rejects, determinism."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import corpus_helpers
import pytest
from corpus_helpers import raw_lines, read_jsonl, read_lines, tree_bytes

from pipeline.cli import main
from pipeline.corpus import finalize as corpus_finalize
from pipeline.corpus.api import export_corpus
from pipeline.validate.api import corpus_stats, validate_export

workshop_corpus = corpus_helpers.workshop_corpus  # session fixtures shared with other modules
bad_corpus = corpus_helpers.bad_corpus


def _cli(*args: str, client=None) -> int:
    extra = ["--scheduler", client.scheduler.address] if client is not None else []
    return main([*args, *extra])


def test_workshop_flow_is_one_command(
    workshop_corpus: Path, tmp_path: Path, dask_client, capsys
) -> None:
    out = tmp_path / "export"
    assert (
        _cli(
            "corpus",
            str(workshop_corpus),
            "--out",
            str(out),
            "--split",
            "0.95,0.03,0.02",
            "--seed",
            "42",
            client=dask_client,
        )
        == 0
    )
    printed = capsys.readouterr()
    assert printed.out == ""  # stdout stays free for data: the summary goes to stderr
    assert "705 documents" in printed.err and "train" in printed.err
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "_manifest.json",
        "card",
        "dataset_stats.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    stats = json.loads((out / "dataset_stats.json").read_text())
    counts = [stats["splits"][s]["count"] for s in ("train", "validation", "test")]
    assert sum(counts) == stats["total_documents"] == 705
    # Hash splits follow the ratios up to sampling noise: about 670/21/14.
    assert abs(counts[0] - 670) <= 15 and abs(counts[1] - 21) <= 10 and abs(counts[2] - 14) <= 9
    for key in ("avg_text_length", "total_chars", "total_words"):
        assert stats["splits"]["train"][key] > 0
    assert (
        set(stats["quality_distribution"]) == {"high", "medium", "low"}
        and sum(stats["quality_distribution"].values()) == 705
    )
    assert (
        sum(stats["domain_distribution"].values()) == 705
        and stats["text_length_stats"]["max"] > stats["text_length_stats"]["min"]
    )
    assert stats["rejected"] == {} and stats["accounting"]["balanced"]
    assert [len(read_lines(out / f"{s}.jsonl")) for s in ("train", "validation", "test")] == counts
    assert _cli("validate", str(out)) == 0
    assert capsys.readouterr().out.rstrip().endswith("ALL SPLITS PASSED VALIDATION")
    assert _cli("stats", str(out)) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["test"]["count"] == counts[2]
    assert _cli("summary", str(workshop_corpus), str(out)) == 0
    assert "0.0%" in capsys.readouterr().out


def test_hugging_face_datasets_loads_the_splits(
    workshop_corpus: Path, tmp_path: Path, dask_client
) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "export"
    summary = export_corpus(
        [str(workshop_corpus)], str(out), client=dask_client, compression="gzip"
    )
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))
    assert set(ds) == {"train", "validation", "test"}
    assert {k: v.num_rows for k, v in ds.items()} == summary["splits"]
    assert ds["train"].column_names == ["text", "metadata"]
    assert "source_url" in ds["train"][0]["metadata"]


def test_exact_counts_give_exact_split_sizes(
    workshop_corpus: Path, tmp_path: Path, dask_client
) -> None:
    summary = export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "a"),
        client=dask_client,
        exact_counts=True,
        chunk_size=200_000,
        card=False,
    )
    assert summary["splits"] == {"train": 670, "validation": 21, "test": 14}
    again = export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "b"),
        client=dask_client,
        exact_counts=True,
        chunk_size=1 << 30,
        card=False,
    )
    for split in ("train", "validation", "test"):  # whatever the partitioning
        assert (tmp_path / "a" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{split}.jsonl"
        ).read_bytes()
    assert again["splits"] == summary["splits"]
    counts = export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "c"),
        client=dask_client,
        split="train=rest,validation=50,test=25",
        exact_counts=True,
        card=False,
    )
    assert counts["splits"] == {"train": 630, "validation": 50, "test": 25}


def test_every_input_line_ends_in_exactly_one_file(bad_corpus, tmp_path: Path, dask_client) -> None:
    root, info = bad_corpus
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {
                "fields": {
                    "text": "text",
                    "metadata.id": "id",
                    "metadata.quality_score": {"from": "quality_prob", "type": "float"},
                }
            }
        )
    )
    out = tmp_path / "export"
    summary = export_corpus(
        [str(root)],
        str(out),
        client=dask_client,
        schema=str(schema),
        chunk_size=50_000,
        parts=True,
        compression="zstd",
    )
    planted = {k: info["z"]["bad"][k] + info["p"]["bad"][k] for k in info["z"]["bad"]}
    lines = info["z"]["lines"] + info["p"]["lines"]
    assert summary["accounting"] == {
        "input_lines": lines,
        "blank_lines": 5,
        "exported": 400 - 64,
        "rejected": 64,
        "balanced": True,
    }
    by_reason = summary["rejected_by_reason"]
    assert by_reason == {
        "empty_text": planted["empty_text"],
        "invalid_json": planted["invalid_json"],
        "invalid_utf8": planted["truncated_utf8"],
        "missing_text": planted["missing_text"],
        "not_an_object": planted["not_an_object"],
        "nul_in_text": planted["nul_in_text"],
        "text_not_string": planted["text_not_string"],
        "wrong_type:metadata.quality_score": planted["wrong_type_quality"],
    }
    # Every non-blank input line, by (file, byte offset), is in exactly one output or reject file.
    inputs = {}
    for path in sorted(root.rglob("*.jsonl*")):
        offset = 0
        for line in raw_lines(path):
            if line.strip():
                inputs[(str(path), offset)] = line
            offset += len(line) + 1
    seen = []
    for f in out.glob("*/part-*.jsonl.zst"):
        if f.parent.name == "rejects":
            seen += [(r["file"], r["offset"]) for r in read_jsonl(f)]
        else:
            ids = {r["metadata"]["id"] for r in read_jsonl(f)}
            for key, line in inputs.items():
                found = re.search(rb'"id":"(doc-\d+)"', line)
                if found and found.group(1).decode() in ids:
                    seen.append(key)
    assert sorted(seen) == sorted(inputs)
    assert validate_export(str(out)).passed


@pytest.mark.parametrize("parts", [False, True])
def test_same_bytes_with_one_or_two_workers(
    workshop_corpus: Path, tmp_path: Path, dask_client, dask_client_1worker, parts: bool
) -> None:
    args = {"chunk_size": 300_000, "parts": parts, "compression": "gzip" if parts else None}
    export_corpus(
        [str(workshop_corpus)], str(tmp_path / "one" / "export"), client=dask_client_1worker, **args
    )
    export_corpus(
        [str(workshop_corpus)], str(tmp_path / "two" / "export"), client=dask_client, **args
    )
    one, two = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert one == two and len(one) >= 8


def test_split_membership_does_not_depend_on_partitioning(
    workshop_corpus: Path, tmp_path: Path, dask_client
) -> None:
    small = export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "small"),
        client=dask_client,
        chunk_size=100_000,
        card=False,
    )
    large = export_corpus(
        [str(workshop_corpus)],
        str(tmp_path / "large"),
        client=dask_client,
        chunk_size=1 << 30,
        card=False,
    )
    assert small["splits"] == large["splits"]
    for split in ("train", "validation", "test"):
        assert (tmp_path / "small" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "large" / f"{split}.jsonl"
        ).read_bytes()


def test_resume_after_an_interrupted_run_gives_identical_bytes(
    workshop_corpus: Path, tmp_path: Path, dask_client, monkeypatch
) -> None:
    args = {"chunk_size": 250_000, "client": dask_client}
    export_corpus([str(workshop_corpus)], str(tmp_path / "clean" / "export"), **args)
    crashed = tmp_path / "crashed" / "export"
    with monkeypatch.context() as m:

        def crash(*a, **k):
            raise KeyboardInterrupt

        m.setattr(corpus_finalize, "finalize", crash)
        with pytest.raises(KeyboardInterrupt):
            export_corpus([str(workshop_corpus)], str(crashed), **args)
    parts = sorted(crashed.glob("train/part-*.jsonl"))
    assert (
        len(parts) >= 3
        and (crashed / ".dexport-progress").is_dir()
        and not (crashed / "_manifest.json").exists()
    )
    parts[1].unlink()  # lost before the crash: --resume must redo that partition
    (crashed / "validation" / parts[-1].name).unlink()
    with pytest.raises(Exception, match="already exists"):
        export_corpus([str(workshop_corpus)], str(crashed), **args)
    summary = export_corpus([str(workshop_corpus)], str(crashed), resume=True, **args)
    assert summary["documents"] == 705
    assert tree_bytes(crashed.parent) == tree_bytes(tmp_path / "clean")
    again = export_corpus([str(workshop_corpus)], str(crashed), resume=True, **args)
    assert again["already_complete"] and again["documents"] == 705
    with pytest.raises(Exception, match="other parameters"):
        export_corpus([str(workshop_corpus)], str(crashed), resume=True, seed=1, **args)


def test_parquet_output_and_schema_static_values(
    workshop_corpus: Path, tmp_path: Path, dask_client
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "pq"
    summary = export_corpus(
        [str(workshop_corpus)],
        str(out),
        client=dask_client,
        format="parquet",
        set_values=["metadata.source=wikipedia", "metadata.curation_date=2024-01-15"],
        chunk_size=300_000,
    )
    table = pq.read_table(out / "train.parquet")
    assert table.num_rows == summary["splits"]["train"]
    row = table.slice(0, 1).to_pylist()[0]
    assert (
        row["metadata"]["source"] == "wikipedia"
        and row["metadata"]["curation_date"] == "2024-01-15"
    )
    assert validate_export(str(out)).passed
    assert corpus_stats(str(out))["total_documents"] == 705


def _word_tokenizer(path: Path) -> Path:
    """A tiny word-level fast tokenizer file (fast to build, real Rust tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "the": 1, "of": 2, "and": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def test_token_counts_with_a_tokenizer(workshop_corpus: Path, tmp_path: Path, dask_client) -> None:
    tok = _word_tokenizer(tmp_path / "tokenizer.json")
    out = tmp_path / "export"
    export_corpus(
        [str(workshop_corpus)], str(out), client=dask_client, tokenizer=str(tok), card=False
    )
    stats = json.loads((out / "dataset_stats.json").read_text())
    # Whitespace word-level tokens: one token per word.
    assert (
        stats["total_tokens"]
        == sum(s["total_tokens"] for s in stats["splits"].values())
        == stats["total_words"]
    )
    assert corpus_stats(str(out), tokenizer=str(tok))["total_tokens"] == stats["total_tokens"]


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "0.9,0.3,0.02"], "sum to 1.22"),
        (["--split", "0.9,x"], "not a number"),
        (["--format", "parquet", "--compression", "gzip"], "--compression applies to jsonl"),
        (
            ["--schema", "missing.yaml", "--split", "2,1"],
            "schema file 'missing.yaml' does not exist.*gives record counts",
        ),
        (["--set", "novalue"], "not PATH=VALUE"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(
    workshop_corpus: Path, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main(["corpus", str(workshop_corpus), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dexport: error: ") and re.search(message, err)
    assert not out.exists()


def test_missing_input_and_taken_output_exit_2(
    workshop_corpus: Path, tmp_path: Path, capsys
) -> None:
    assert main(["corpus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "o").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert main(["corpus", str(workshop_corpus), "--out", str(taken), "--exact-counts"]) == 2
    assert "pick another --out" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]


def test_validate_reports_a_corrupted_export(
    workshop_corpus: Path, tmp_path: Path, dask_client, capsys
) -> None:
    out = tmp_path / "export"
    export_corpus([str(workshop_corpus)], str(out), client=dask_client, card=False)
    lines = (out / "train.jsonl").read_bytes().split(b"\n")
    for i in (3, 10, 11, 12, 13, 14, 15, 16):
        rec = json.loads(lines[i])
        rec["text"] = "  " if i != 10 else 5
        lines[i] = json.dumps(rec).encode()
    lines[20] = b'{"text": "broken'
    (out / "train.jsonl").write_bytes(b"\n".join(lines))
    assert main(["validate", str(out)]) == 1
    report = capsys.readouterr().out
    assert "train.jsonl:4: empty_text" in report and "train.jsonl:11: text_not_string" in report
    assert "... and 4 more" in report and "differs from the manifest" in report
    assert report.rstrip().splitlines()[-1].startswith("VALIDATION FAILED")
    shutil.rmtree(out / "test.jsonl", ignore_errors=True)
    (out / "test.jsonl").unlink()
    assert main(["validate", str(out)]) == 1
    assert "test.jsonl: listed in the manifest but missing" in capsys.readouterr().out


def test_strict_exits_1_on_rejects_and_stats_detect_edits(
    bad_corpus, tmp_path: Path, dask_client, capsys
) -> None:
    root, _ = bad_corpus
    out = tmp_path / "export"
    assert (
        _cli(
            "corpus",
            str(root / "p"),
            "--out",
            str(out),
            "--strict",
            "--no-card",
            client=dask_client,
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "--strict" in captured.err and "rejected by reason" in captured.err
    assert (out / "_manifest.json").exists() and (out / "rejects" / "part-00000.jsonl").exists()
    assert _cli("stats", str(out)) == 0
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert json.loads(capsys.readouterr().out)["rejected"] == stats["rejected"]
    stats["total_documents"] += 1
    (out / "dataset_stats.json").write_text(json.dumps(stats))
    assert _cli("stats", str(out)) == 1
    assert "differ from dataset_stats.json in total_documents" in capsys.readouterr().err
