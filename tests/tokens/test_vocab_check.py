"""Text export with a tokenizer that does not know the dataset's ids fails, never garbage."""

from __future__ import annotations

import numpy as np
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDatasetBuilder


def test_ids_beyond_the_vocabulary_stop_the_export(byte_bpe_tokenizer_path, tmp_path, capsys):  # noqa: F811
    prefix = str(tmp_path / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    rng = np.random.default_rng(0)
    for _ in range(20):
        builder.add_document(rng.integers(0, 1000, 50))
    builder.add_document(np.array([5, 6, 40_000, 7]))  # made with a larger vocabulary
    builder.finalize()
    out = tmp_path / "docs.jsonl"
    args = ["tokens", prefix, "--documents", "0:21", "--out", str(out)]
    assert main([*args, "--text", "--tokenizer", str(byte_bpe_tokenizer_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: error: token id 40000"), err
    assert "vocabulary" in err[0]
    assert not out.exists() and not (tmp_path / "docs.jsonl.dexport-parts").exists()
    assert main(args) == 0  # raw tokens need no vocabulary
