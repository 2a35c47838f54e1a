"""The on-disk cache of checked byte tables: a second load needs no transformers and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401

from gpu.detok import Detokenizer, cache_dir

LOAD_AND_DECODE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from gpu.detok import Detokenizer
    detok = Detokenizer.from_pretrained(sys.argv[1])
    ids = np.arange(0, 400, dtype=np.int32)
    offsets = np.array([0, 100, 250, 400], dtype=np.int64)
    print(json.dumps({
        "texts": detok.decode(ids, offsets),
        "fast": detok.exact_fast_path,
        "transformers": "transformers" in sys.modules,
        "torch": "torch" in sys.modules,
    }))
    """
)


def _run(path: Path, cache: Path) -> dict:
    env = {**os.environ, "DEXPORT_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", LOAD_AND_DECODE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_second_load_reads_the_cached_table_without_transformers(
    byte_bpe_tokenizer_path,  # noqa: F811
    tmp_path,
):
    first = _run(byte_bpe_tokenizer_path, tmp_path / "cache")
    second = _run(byte_bpe_tokenizer_path, tmp_path / "cache")
    assert first["fast"] and second["fast"]
    assert first["transformers"]  # built and checked against tokenizer.decode once
    assert not second["transformers"] and not second["torch"]
    assert second["texts"] == first["texts"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    ids = list(range(400))
    want = [tok.decode(ids[a:b]) for a, b in ((0, 100), (100, 250), (250, 400))]
    assert second["texts"] == want


def test_cache_key_follows_the_tokenizer_files(byte_bpe_tokenizer_path, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "tok"
    copy.mkdir()
    for f in Path(byte_bpe_tokenizer_path).iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    Detokenizer.from_pretrained(str(copy))
    Detokenizer.from_pretrained(str(copy), skip_special_tokens=True)
    assert len(os.listdir(cache_dir())) == 2  # one table per skip_special_tokens setting
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["clean_up_tokenization_spaces"] = not config.get("clean_up_tokenization_spaces", False)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    Detokenizer.from_pretrained(str(copy))
    assert len(os.listdir(cache_dir())) == 3  # changed settings: built and checked again


def test_an_unreadable_cache_entry_is_rebuilt(byte_bpe_tokenizer_path, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    Detokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    (entry,) = Path(cache_dir()).iterdir()
    entry.write_bytes(b"not an npz")
    detok = Detokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    ids, offsets = np.arange(50, dtype=np.int32), np.array([0, 50], dtype=np.int64)
    assert detok.exact_fast_path and detok.decode(ids, offsets)
    assert entry.read_bytes()[:2] == b"PK"  # rewritten


def test_cache_can_be_turned_off(byte_bpe_tokenizer_path, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("DEXPORT_CACHE_DIR", "none")
    assert cache_dir() is None
    assert Detokenizer.from_pretrained(str(byte_bpe_tokenizer_path)).exact_fast_path


def test_a_missing_tokenizer_says_so_without_hub_wording(tmp_path):
    from gpu.errors import BackendError

    with pytest.raises(BackendError, match="not found") as err:
        Detokenizer.from_pretrained(str(tmp_path / "nope"))
    assert "Repo id" not in str(err.value)
