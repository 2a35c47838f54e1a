"""``dexport corpus`` from a database: JSONL, SQLite and PostgreSQL give the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import db_services
import pytest

from pipeline import export_corpus
from pipeline.cli import main

SPLITS = ("train.jsonl", "validation.jsonl", "test.jsonl")
SCHEMA = {
    "text": "text",
    "fields": {
        "text": "text",
        "metadata.title": "title",
        "metadata.quality_score": {"from": "quality_prob", "type": "float"},
        "metadata.domain": "domain",
    },
    "unmapped": "metadata",  # id, flag and meta follow, in input (column) order
    "stats": {"domain": "metadata.domain", "quality": "metadata.quality_score"},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory, postgres_server) -> dict[str, object]:
    root = tmp_path_factory.mktemp("db_corpus")
    docs = db_services.documents()
    schema = root / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    return {
        "root": root,
        "schema": str(schema),
        "jsonl": str(db_services.write_jsonl(root / "docs.jsonl", docs)),
        "sqlite": db_services.write_sqlite(root / "games.db", docs),
        "postgres": db_services.write_postgres(postgres_server, docs, "corpus_docs"),
    }


def _splits(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in SPLITS}


def test_jsonl_sqlite_and_postgres_give_identical_splits(sources, tmp_path, capsys):
    common = ["--schema", sources["schema"], "--split-key", "id"]
    assert main(["corpus", sources["jsonl"], "--out", str(tmp_path / "j"), *common]) == 0
    db = ["--table", "docs", "--key", "id", "--chunk-size", "4k"]
    assert main(["corpus", sources["sqlite"], "--out", str(tmp_path / "s"), *common, *db]) == 0
    pg = ["--table", "corpus_docs", "--key", "id", "--chunk-size", "4k"]
    assert main(["corpus", sources["postgres"], "--out", str(tmp_path / "p"), *common, *pg]) == 0
    capsys.readouterr()
    jsonl = _splits(tmp_path / "j")
    assert sum(len(v.splitlines()) for v in jsonl.values()) == 233  # 240 - 7 without text
    assert _splits(tmp_path / "s") == jsonl
    assert _splits(tmp_path / "p") == jsonl
    stats = [json.loads((tmp_path / x / "dataset_stats.json").read_text()) for x in "jsp"]
    assert stats[1]["splits"] == stats[0]["splits"] == stats[2]["splits"]
    # Several key ranges were read (and joined in key order).
    manifest = json.loads((tmp_path / "p" / "_manifest.json").read_text())
    assert manifest["parameters"]["partitions"] > 3
    first = json.loads(jsonl["train.jsonl"].splitlines()[0])
    assert list(first["metadata"])[-3:] == ["id", "flag", "meta"]
    rejects = [
        json.loads(line)
        for f in sorted((tmp_path / "p" / "rejects").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(rejects) == 7 and {r["reason"] for r in rejects} == {"missing_text"}
    assert rejects[0]["file"].endswith("table corpus_docs, id=16")
    assert rejects[0]["line"] == 6 and rejects[0]["offset"] == 5


def test_one_and_two_workers_and_the_api_give_the_same_bytes(
    sources, tmp_path, dask_client, dask_client_1worker
):
    outs = []
    for name, client, url, table in (
        ("one", dask_client_1worker, sources["postgres"], "corpus_docs"),
        ("two", dask_client, sources["postgres"], "corpus_docs"),
        ("sqlite", dask_client, sources["sqlite"], "docs"),
    ):
        out = tmp_path / name
        summary = export_corpus(
            url,
            str(out),
            schema=sources["schema"],
            split_key="id",
            exact_counts=True,
            split="train=rest,validation=20,test=20",
            table=table,
            key="id",
            chunk_size=3000,
            client=client,
        )
        assert summary["documents"] == 233 and summary["rejected"] == 7
        outs.append(_splits(out))
    assert outs[0] == outs[1] == outs[2]
    assert len(outs[0]["test.jsonl"].splitlines()) == 20


def test_a_query_source_orders_by_the_key(sources, tmp_path, capsys):
    query = "SELECT id, text, domain FROM corpus_docs WHERE domain = 'go'"
    out = tmp_path / "q"
    args = ["corpus", sources["postgres"], "--query", query, "--key", "id", "--out", str(out)]
    assert main([*args, "--split", "train=1", "--chunk-size", "2k"]) == 0
    capsys.readouterr()
    docs = [d for d in db_services.documents() if d["domain"] == "go" and d["text"]]
    got = [
        json.loads(line)["text"]
        for line in (out / "train.jsonl").read_text().rstrip("\n").split("\n")
    ]
    assert got == [d["text"] for d in docs]


def test_a_job_file_step_reads_a_database(sources, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEXPORT_TEST_PGURL", sources["postgres"])
    job = tmp_path / "job.yaml"
    out = tmp_path / "from-job"
    job.write_text(
        "steps:\n"
        "  - corpus:\n"
        '      inputs: ["${DEXPORT_TEST_PGURL}"]\n'
        "      table: corpus_docs\n"
        "      key: id\n"
        f"      schema: {sources['schema']}\n"
        f"      out: {out}\n"
    )
    assert main(["run", str(job), "--dry-run"]) == 0
    assert main(["run", str(job)]) == 0
    err = capsys.readouterr()
    assert db_services.PASSWORD not in err.out + err.err
    reference = tmp_path / "reference"
    assert (
        main(["corpus", sources["jsonl"], "--schema", sources["schema"], "--out", str(reference)])
        == 0
    )
    capsys.readouterr()
    assert _splits(out) == _splits(reference)
