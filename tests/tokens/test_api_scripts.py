"""The Python API from a plain script: no ``if __name__ == "__main__":`` guard, no hang.

TokenSmith starts no processes, so its users' scripts have no guard. dexport's API runs
exports on threads of the calling process by default, so nothing re-runs the script.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path, multilingual_text  # noqa: F401
from transformers import AutoTokenizer

from pipeline.formats.indexed_dataset import IndexedDatasetBuilder


@pytest.fixture(scope="module")
def prefix(tmp_path_factory, byte_bpe_tokenizer_path) -> str:  # noqa: F811
    tok = AutoTokenizer.from_pretrained(byte_bpe_tokenizer_path)
    prefix = str(tmp_path_factory.mktemp("script") / "ds")
    builder = IndexedDatasetBuilder(prefix, np.uint16)
    for ids in tok(multilingual_text(120, seed=9), add_special_tokens=False)["input_ids"]:
        builder.add_document(np.asarray([*ids, tok.eos_token_id]))
    builder.finalize()
    return prefix


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_unguarded_script_runs_and_ends(prefix, byte_bpe_tokenizer_path, tmp_path, start_method):  # noqa: F811
    out = tmp_path / "batches.jsonl"
    script = tmp_path / "tokensmith_style.py"
    script.write_text(
        textwrap.dedent(f"""
        import multiprocessing
        multiprocessing.set_start_method({start_method!r}, force=True)
        from transformers import AutoTokenizer
        from pipeline import DatasetManager

        tokenizer = AutoTokenizer.from_pretrained({str(byte_bpe_tokenizer_path)!r})
        manager = DatasetManager()
        manager.setup_edit_inspect_sample_export(
            {prefix!r}, {str(tmp_path / "index" / "ds")!r}, 30, 4, 24, 11)
        manager.export.export_batch_range(2, 5, 4, {str(out)!r}, tokenizer=tokenizer,
                                          include_doc_details=True, flatten_batches=True)
        print("done")
    """)
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "done"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["batch_id"] for r in rows] == [2] * 4 + [3] * 4 + [4] * 4
