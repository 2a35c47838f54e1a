"""numba's cache folder when it could not pick one: a read-only install, no writable home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gpu import numba_cache_fallback


def test_writable_defaults_and_an_explicit_folder_are_left_to_numba(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "gpu"
    package.mkdir(parents=True)
    unwritable_home = str(tmp_path / "a-file" / "home")
    (tmp_path / "a-file").write_bytes(b"")
    assert numba_cache_fallback({"HOME": unwritable_home}, str(package)) is None  # in-tree
    assert numba_cache_fallback({"HOME": str(tmp_path)}, str(tmp_path / "a-file")) is None
    env = {"NUMBA_CACHE_DIR": "/somewhere", "HOME": unwritable_home}
    assert numba_cache_fallback(env, str(tmp_path / "a-file")) is None


def test_neither_writable_caches_in_the_temporary_directory(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    nowhere = str(tmp_path / "a-file" / "x")  # under a regular file: no one can make it
    folder = numba_cache_fallback({"HOME": nowhere}, nowhere)
    assert folder is not None and folder.startswith(tempfile.gettempdir())
    assert str(os.getuid()) in folder
    assert numba_cache_fallback({"HOME": nowhere, "XDG_CACHE_HOME": str(tmp_path)}, nowhere) is None
