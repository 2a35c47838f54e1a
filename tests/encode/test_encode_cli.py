"""``dexport encode`` on the command line: errors, --strict, and the text round trip."""

from __future__ import annotations

import json
import re

import pytest
from test_encode import write_corpus
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401

from pipeline.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing tokenizer", "tokenizer .* not found"),
        ("missing input", "does not exist"),
        ("bin suffix", "must be a dataset prefix"),
        ("existing output", r"already exists \(ds.bin\).*not written by.*pick another --out"),
        ("eod without eos", "no eos token.*--eod-id"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_write_nothing(
    case,
    message,
    tmp_path,
    capsys,
    byte_bpe_tokenizer_path,  # noqa: F811
):
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    out = tmp_path / "out"
    out.mkdir()
    tokenizer, inputs, prefix = (
        str(byte_bpe_tokenizer_path),
        [str(tmp_path / "in.jsonl")],
        str(out / "ds"),
    )
    extra: list[str] = []
    if case == "missing tokenizer":
        tokenizer = str(tmp_path / "no-such-tokenizer")
    elif case == "missing input":
        inputs.append(str(tmp_path / "missing.jsonl"))
    elif case == "bin suffix":
        prefix += ".bin"
    elif case == "existing output":
        (out / "ds.bin").write_bytes(b"old")
    elif case == "eod without eos":
        from tokenizers import Tokenizer, models

        Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(
            str(tmp_path / "bare.json")
        )
        tokenizer, extra = str(tmp_path / "bare.json"), ["--append-eod"]
    before = sorted(p.name for p in out.iterdir())
    # No cluster flag: every check runs before an embedded cluster would start.
    rc = main(["encode", *inputs, "--tokenizer", tokenizer, "--out", prefix, *extra])
    assert rc == 2
    assert re.search(message, _error_line(capsys))
    assert sorted(p.name for p in out.iterdir()) == before


def test_round_trip_text_tokens_text(tmp_path, capsys, byte_bpe_tokenizer_path, dask_client):  # noqa: F811
    texts = write_corpus(tmp_path / "corpus", multilingual_text(300, seed=41), files=2)
    cluster = ["--scheduler", dask_client.scheduler.address]
    prefix = str(tmp_path / "data" / "ds")
    tokenizer = str(byte_bpe_tokenizer_path)
    encode = [
        "encode",
        str(tmp_path / "corpus"),
        "--tokenizer",
        tokenizer,
        "--out",
        prefix,
        "--append-eod",
        "--partition-size",
        "8KiB",
        *cluster,
    ]
    assert main(encode) == 0
    summary = capsys.readouterr().err
    assert f"documents  {len(texts):,}" in summary and "uint16" in summary
    assert main([*encode, "--resume", "--strict"]) == 1  # finished run re-used; rejects + --strict
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("dexport: ") and "rejected (--strict); see " in last
    assert last.endswith(f"{prefix}.rejects.jsonl")

    out = tmp_path / "texts.jsonl"
    rc = main(
        [
            "tokens",
            prefix,
            "--documents",
            f"0:{len(texts)}",
            "--text",
            "--tokenizer",
            tokenizer,
            "--skip-special-tokens",
            "--format",
            "jsonl",
            "--out",
            str(out),
            *cluster,
        ]
    )
    assert rc == 0
    back = [json.loads(line)["content"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert back == texts  # byte-level BPE: decode(encode(text)) is the text, document by document

    capsys.readouterr()
    assert main(["inspect", prefix]) == 0
    facts = capsys.readouterr().out
    assert f"{len(texts):,}" in facts and "uint16" in facts
