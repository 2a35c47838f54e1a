"""``dexport encode`` from a database: the same dataset bytes as from the JSONL file."""

from __future__ import annotations

import db_services
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401

from pipeline import encode_corpus
from pipeline.cli import main


@pytest.fixture(scope="module")
def sources(tmp_path_factory, postgres_server) -> dict[str, str]:
    root = tmp_path_factory.mktemp("db_encode")
    docs = db_services.documents()
    return {
        "jsonl": str(db_services.write_jsonl(root / "docs.jsonl", docs)),
        "sqlite": db_services.write_sqlite(root / "games.db", docs),
        "postgres": db_services.write_postgres(postgres_server, docs, "encode_docs"),
    }


def _dataset(prefix) -> tuple[bytes, bytes]:
    return (
        (prefix.parent / f"{prefix.name}.bin").read_bytes(),
        (prefix.parent / f"{prefix.name}.idx").read_bytes(),
    )


def test_jsonl_sqlite_and_postgres_encode_to_the_same_dataset(
    sources,
    tmp_path,
    capsys,
    dask_client,
    byte_bpe_tokenizer_path,  # noqa: F811
):
    tok = ["--tokenizer", str(byte_bpe_tokenizer_path), "--append-eod"]
    assert main(["encode", sources["jsonl"], "--out", str(tmp_path / "j"), *tok]) == 0
    db = ["--key", "id", "--partition-size", "3KiB"]
    sqlite = ["encode", sources["sqlite"], "--table", "docs", "--out", str(tmp_path / "s")]
    assert main([*sqlite, *tok, *db]) == 0
    captured = capsys.readouterr()
    assert db_services.PASSWORD not in captured.out + captured.err
    summary = encode_corpus(
        sources["postgres"],
        tmp_path / "p",
        tokenizer=byte_bpe_tokenizer_path,
        append_eod=True,
        table="encode_docs",
        key="id",
        partition_bytes=3 << 10,
        client=dask_client,
    )
    assert summary["documents"] == 233 and summary["rejected"] == {"missing_field": 7}
    assert summary["shards"] > 3
    reference = _dataset(tmp_path / "j")
    assert _dataset(tmp_path / "s") == reference
    assert _dataset(tmp_path / "p") == reference
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith("p")]
    assert any(p.name.endswith("manifest.json") for p in written), written
    for path in written:
        assert db_services.PASSWORD.encode() not in path.read_bytes(), path
