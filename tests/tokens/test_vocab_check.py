"""Text with a tokenizer that does not know the dataset's ids fails, never garbage: exports,
``dexport inspect`` and the API's detokenized samples."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401

from pipeline import DatasetManager
from pipeline.cli import main
from pipeline.errors import UserError
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


def _wide_dataset(folder) -> str:
    """Short documents that each hold one id past the test tokenizer's 1,500: every window and
    every document is made with a larger vocabulary."""
    prefix = str(folder / "wide")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for k in range(30):
        builder.add_document(np.array([5 + k, 40_000 + k, 7]))
    builder.finalize()
    return prefix


def _refused(capsys, argv: list[str], prefix: str) -> None:
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: error: token id 400"), err
    assert f"in {prefix}.bin is outside the tokenizer's vocabulary" in err[0]
    assert "pass --tokenizer the one the dataset was made with" in err[0]
    assert captured.out == ""  # no facts half-printed before the refusal


RUN = ["--seq-len", "8", "--seed", "1", "--num-samples", "10", "--splits", "100,0,0"]


@pytest.mark.parametrize(
    "shown", [["--document", "4"], ["--sequence", "3"], ["--batch", "1", "--batch-size", "4"]]
)
def test_inspect_refuses_text_beyond_the_vocabulary(
    byte_bpe_tokenizer_path,  # noqa: F811
    tmp_path,
    capsys,
    shown: list[str],
) -> None:
    prefix = _wide_dataset(tmp_path)
    tok = ["--tokenizer", str(byte_bpe_tokenizer_path)]
    _refused(capsys, ["inspect", prefix, *RUN, *shown, *tok], prefix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.bin", "wide.idx"]  # no index
    assert main(["inspect", prefix, *RUN, *shown]) == 0  # token ids need no vocabulary
    assert "40" in capsys.readouterr().out


def test_inspect_of_a_blend_names_the_dataset(byte_bpe_tokenizer_path, tmp_path, capsys) -> None:  # noqa: F811
    prefix = _wide_dataset(tmp_path)
    paths = [f"--{s}-data-paths" for s in ("train", "valid", "test")]
    blend = [x for flag in paths for x in (flag, prefix)]
    argv = ["inspect", *blend, *RUN[:4], "--train-iters", "3", "--batch-size", "2"]
    _refused(capsys, [*argv, "--sequence", "1", "--tokenizer", byte_bpe_tokenizer_path], prefix)


def test_api_samples_refuse_text_beyond_the_vocabulary(byte_bpe_tokenizer_path, tmp_path) -> None:  # noqa: F811
    from transformers import AutoTokenizer

    prefix = _wide_dataset(tmp_path)
    with DatasetManager() as manager:
        manager.setup_edit_inspect_sample_export(prefix, str(tmp_path / "index"), 4, 2, 8, 1)
        for tokenizer in (
            str(byte_bpe_tokenizer_path),
            AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path),
        ):
            with pytest.raises(UserError, match=r"token id 400\d+ in .*wide\.bin is outside"):
                manager.sample.get_samples_by_indices(
                    [0], return_detokenized=True, tokenizer=tokenizer
                )
            with pytest.raises(UserError, match="outside the tokenizer's vocabulary"):
                manager.inspect.inspect_sample_by_batch(
                    1, 2, return_detokenized=True, tokenizer=tokenizer
                )
        raw = manager.inspect.inspect_sample_by_id(0)  # token ids need no vocabulary
        assert int(np.concatenate(raw).max()) >= 40_000
