"""Compute backends (NumPy/pandas or CuPy/cuDF) and kernels written once against an array namespace.

Modules are imported where used (``gpu.backend``, ``gpu.detok``, ``gpu.text_escape``,
``gpu.hashing``): importing this package must stay cheap, since every worker process does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping


def numba_cache_fallback(environ: Mapping[str, str], package_dir: str) -> str | None:
    """The folder numba should cache compiled kernels in, when it could not choose one itself.

    numba caches a kernel beside its source (``__pycache__``) or in the user's cache folder, and
    refuses to import a module with cached kernels when it can write to neither (a read-only
    install run by a user without a writable home): then a folder of the temporary directory,
    per user. None when ``NUMBA_CACHE_DIR`` is set or either default is writable.
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return None
    home = environ.get("HOME") or os.path.expanduser("~")
    user_cache = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    for folder in (os.path.join(package_dir, "__pycache__"), os.path.join(user_cache, "numba")):
        if _could_write(folder):
            return None
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"dexport-numba-{uid}")


def _could_write(folder: str) -> bool:
    """Whether ``folder`` exists writable, or could be made in its nearest existing parent."""
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


# Before any module of this package imports numba (it reads the variable once, on import).
if (_fallback := numba_cache_fallback(os.environ, os.path.dirname(__file__))) is not None:
    os.environ["NUMBA_CACHE_DIR"] = _fallback
