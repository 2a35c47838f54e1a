"""Detokenizer: token windows -> text equal to ``tokenizer.decode``, at memory speed.

Built from a loaded Hugging Face tokenizer, it decodes many windows at once from a byte table
(:mod:`gpu.byte_table`) with a compiled kernel (:mod:`gpu.detok_kernels` on CPU,
:mod:`gpu.detok_cuda` on a GPU). Before it trusts the table it checks it against the tokenizer
itself — every id alone and after another token, random windows, and a probe for the
``clean_up_tokenization`` rewrite that transformers may apply after decoding. When the decoder
chain is not one the table models, or the check finds any difference, it falls back to
``tokenizer.decode`` per window and says so once in the log: correctness first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np

from gpu.byte_table import KIND_TEXT, ByteTable, UnsupportedDecoder, build_byte_table
from gpu.detok_kernels import CLEANUP_RULES, decode_windows_cpu, json_safe_rules, pack_rules
from gpu.errors import BackendError

log = logging.getLogger("dexport.detok")
_warned: set[tuple[str, str]] = set()

# Text whose tokens exercise transformers' clean_up_tokenization patterns.
_CLEANUP_PROBE = (
    "x ' y . z , a ? b ! c n't d 'm e 's f 've g 're h.i,j don't it's I'm we've they're"
)
_RANDOM_PROBES = 200
_KERNEL_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
_PROBE_LEN = 48


def _warn_once(name: str, reason: str) -> None:
    if (name, reason) not in _warned:
        _warned.add((name, reason))
        log.warning("detokenizer for %s falls back to tokenizer.decode: %s", name, reason)


class Detokenizer:
    """Decode windows of token ids exactly as ``tokenizer.decode`` does, but in bulk.

    Build it with :meth:`from_pretrained` or :meth:`from_tokenizer`. ``exact_fast_path`` is
    True when the byte table is used (checked against the tokenizer), False when every window
    goes through ``tokenizer.decode``; ``name`` identifies the tokenizer for manifests and
    ``vocab_size`` is the number of ids it knows.
    """

    exact_fast_path: bool
    name: str
    vocab_size: int

    def __init__(
        self,
        tokenizer: Any,
        *,
        skip_special_tokens: bool = False,
        name: str | None = None,
        verify: bool = True,
        threads: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        # One thread by default: dexport runs one Dask worker process per core already.
        self.threads = 1 if threads is None else max(1, int(threads))
        self.skip_special_tokens = bool(skip_special_tokens)
        self.name = name or str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
        self.table: ByteTable | None = None
        self.cleanup = False
        self.fallback_reason = ""
        try:
            self.table = self._build_table()
            if verify:
                self._verify()
        except UnsupportedDecoder as exc:
            self.table = None
            self.fallback_reason = str(exc)
            _warn_once(self.name, self.fallback_reason)
        except Exception as exc:  # noqa: BLE001 - any surprise in a tokenizer means: use decode
            self.table = None
            self.fallback_reason = f"could not model the tokenizer ({type(exc).__name__}: {exc})"
            _warn_once(self.name, self.fallback_reason)
        self.exact_fast_path = self.table is not None
        self.vocab_size = self.table.vocab_size if self.table is not None else len(tokenizer)
        self._rules = pack_rules(CLEANUP_RULES if self.cleanup else ())

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        skip_special_tokens: bool = False,
        verify: bool = True,
        threads: int | None = None,
    ) -> Detokenizer:
        """Load a local tokenizer (a ``save_pretrained`` folder or a ``tokenizer.json``), wrapped.

        Nothing is downloaded. The first load of a tokenizer goes through transformers
        (``AutoTokenizer.from_pretrained``), builds the byte table and checks it against
        ``tokenizer.decode``; a checked table is cached on disk (:func:`cache_dir`, keyed by the
        sha256 of the tokenizer's files and the library versions), so later loads read the table
        alone — no transformers, no torch, no check: a fraction of a second. A missing or
        unloadable tokenizer raises :class:`~gpu.errors.BackendError`.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise BackendError(
                f"tokenizer {path!r} not found; pass --tokenizer a local folder holding "
                "tokenizer.json (as saved by save_pretrained) or a tokenizer.json file"
            )
        key = _cache_key(path, skip_special_tokens)
        cached = _load_cached(key, name=path, skip_special_tokens=skip_special_tokens)
        if cached is not None:
            cached.threads = 1 if threads is None else max(1, int(threads))
            return cached
        try:
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            if os.path.isdir(path):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            else:
                from transformers import PreTrainedTokenizerFast

                tokenizer = PreTrainedTokenizerFast(tokenizer_file=path)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = "" if os.path.exists(str(path)) else " (no such directory)"
            raise BackendError(
                f"cannot load tokenizer {str(path)!r}{hint}: {reason[:200]}; pass --tokenizer a "
                "directory holding tokenizer.json / tokenizer_config.json"
            ) from None
        detok = cls(
            tokenizer,
            skip_special_tokens=skip_special_tokens,
            name=str(path),
            verify=verify,
            threads=threads,
        )
        if verify and detok.exact_fast_path:
            _save_cached(key, detok)
        return detok

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        *,
        skip_special_tokens: bool = False,
        verify: bool = True,
        threads: int | None = None,
    ) -> Detokenizer:
        """Wrap an already loaded Hugging Face tokenizer.

        ``verify=False`` skips the check against the tokenizer (tests of the check only);
        ``threads``: CPU kernel threads (default 1; windows are split into that many blocks).
        """
        return cls(
            tokenizer, skip_special_tokens=skip_special_tokens, verify=verify, threads=threads
        )

    # -- building and checking -------------------------------------------------------------

    def _build_table(self) -> ByteTable:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise UnsupportedDecoder(f"{type(self.tokenizer).__name__} is not a fast tokenizer")
        return build_byte_table(backend, skip_special_tokens=self.skip_special_tokens)

    def _verify(self) -> None:
        """Compare the table with the tokenizer; choose the cleanup rule; raise on a mismatch."""
        table = self.table
        assert table is not None
        backend = self.tokenizer.backend_tokenizer
        ids = np.arange(table.vocab_size, dtype=np.int64)
        anchor = _anchor_id(table)
        # Every id alone (its first form) and after the anchor (its rest form), through the
        # tokenizers backend: this covers the whole vocabulary cheaply.
        pair_ids = np.stack([np.full_like(ids, anchor), ids], 1)
        singles = ids.reshape(-1, 1).tolist()
        pairs = pair_ids.tolist()
        tokens = np.concatenate([ids, pair_ids.ravel()])
        offsets = np.concatenate(
            [np.arange(len(ids) + 1), len(ids) + 2 * np.arange(1, len(ids) + 1)]
        )
        got = self._decode_table(tokens, offsets.astype(np.int64), cleanup=False)
        want = backend.decode_batch(singles + pairs, skip_special_tokens=self.skip_special_tokens)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if g != w:
                window = (singles + pairs)[i]
                raise UnsupportedDecoder(
                    f"table differs from the decoder on ids {window}: {g!r} != {w!r}"
                )
        # Whole windows through transformers' decode: random ids, and real text for cleanup.
        rng = np.random.default_rng(0)
        windows = [
            list(rng.integers(0, table.vocab_size, rng.integers(0, _PROBE_LEN)))
            for _ in range(_RANDOM_PROBES)
        ]
        windows.append(list(self.tokenizer.encode(_CLEANUP_PROBE, add_special_tokens=False)))
        windows.append([anchor] + windows[-1])
        want = [
            self.tokenizer.decode([int(t) for t in w], skip_special_tokens=self.skip_special_tokens)
            for w in windows
        ]
        flat = np.asarray([t for w in windows for t in w], dtype=np.int64)
        offs = np.cumsum([0] + [len(w) for w in windows]).astype(np.int64)
        for cleanup in (False, True):
            if self._decode_table(flat, offs, cleanup=cleanup) == want:
                self.cleanup = cleanup
                return
        got = self._decode_table(flat, offs, cleanup=False)
        bad = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        raise UnsupportedDecoder(
            f"transformers' decode differs on ids {windows[bad][:8]}...: {got[bad]!r} != "
            f"{want[bad]!r}"
        )

    def _decode_table(self, tokens: np.ndarray, offsets: np.ndarray, *, cleanup: bool) -> list[str]:
        assert self.table is not None
        rules = pack_rules(CLEANUP_RULES if cleanup else ())
        data, offs = decode_windows_cpu(self.table, tokens, offsets, rules)
        return _split(data, offs)

    # -- decoding --------------------------------------------------------------------------

    def decode_to_bytes(
        self,
        tokens: Any,
        offsets: Any,
        *,
        json: bool = False,
        frames: tuple[tuple[Any, Any], tuple[Any, Any]] | None = None,
    ) -> tuple[Any, Any]:
        """Decode windows ``tokens[offsets[i]:offsets[i+1]]`` to UTF-8.

        ``tokens``: flat integer array (any int dtype, NumPy, CuPy or another array-API
        namespace); ``offsets``: int64 ``[n+1]``. Returns ``(bytes uint8, offsets int64 [n+1])``
        in the same namespace, with
        ``bytes[off[i]:off[i+1]].decode() == tokenizer.decode(window i, skip_special_tokens)``.
        CuPy arrays are decoded by the CUDA kernel; others by the CPU kernel on the host.

        ``json``: each window as a JSON string literal instead, byte for byte
        ``orjson.dumps(text)``. ``frames``: ``(before, after)`` NumPy byte columns (``(data,
        offsets)``, one row per window): row ``i`` is ``before[i] + window i + after[i]``, so
        a writer gets whole lines (a JSONL record around its text) from one pass.
        """
        if type(tokens).__module__.split(".")[0] == "cupy":
            return self._decode_device(tokens, offsets, json, frames)
        if not isinstance(tokens, np.ndarray) and hasattr(tokens, "__array_namespace__"):
            xp = tokens.__array_namespace__()
            data, offs = self.decode_to_bytes(
                np.asarray(tokens), np.asarray(offsets), json=json, frames=frames
            )
            return xp.asarray(data), xp.asarray(offs)
        tokens, offsets = _check_windows(np.asarray(tokens), np.asarray(offsets))
        if self.table is None:
            data, offs = _encode(self._decode_fallback(tokens, offsets))
            return _finish(data, offs, json, frames)
        if json and not self._json_in_kernel:
            data, offs = self.decode_to_bytes(tokens, offsets)
            return _finish(data, offs, json, frames)
        table = self.table.json_escaped if json else self.table
        return decode_windows_cpu(
            table, tokens, offsets, self._rules, threads=self.threads, json=json, frames=frames
        )

    @property
    def _json_in_kernel(self) -> bool:
        """Whether the kernel can write JSON literals itself (escaped table forms): the strip
        character and the rewrite rules must not touch what JSON escapes."""
        table = self.table
        strip_ok = table is not None and (table.strip_count == 0 or 0x20 <= table.strip_char)
        strip_ok = strip_ok and table.strip_char not in (0x22, 0x5C)
        return strip_ok and json_safe_rules(CLEANUP_RULES if self.cleanup else ())

    def decode(self, tokens: Any, offsets: Any) -> list[str]:
        """Decode windows to Python strings (see :meth:`decode_to_bytes`)."""
        if self.table is None:
            tokens = _asnumpy(tokens)
            tokens, offsets = _check_windows(tokens, _asnumpy(offsets))
            return self._decode_fallback(tokens, offsets)
        data, offs = self.decode_to_bytes(tokens, offsets)
        return _split(_asnumpy(data), _asnumpy(offs))

    def _decode_fallback(self, tokens: np.ndarray, offsets: np.ndarray) -> list[str]:
        decode = self.tokenizer.decode
        skip = self.skip_special_tokens
        return [
            decode(tokens[a:b].tolist(), skip_special_tokens=skip)
            for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]

    def _decode_device(
        self,
        tokens: Any,
        offsets: Any,
        json: bool,
        frames: tuple[tuple[Any, Any], tuple[Any, Any]] | None,
    ) -> tuple[Any, Any]:
        import cupy

        if self.table is None or json or frames is not None:
            # The CUDA kernel writes plain text; escaping and framing run on the host.
            if self.table is None:
                data, offs = self.decode_to_bytes(cupy.asnumpy(tokens), cupy.asnumpy(offsets))
            else:
                data, offs = map(cupy.asnumpy, self._decode_device(tokens, offsets, False, None))
            data, offs = _finish(data, offs, json, frames)
            return cupy.asarray(data), cupy.asarray(offs)
        from gpu.detok_cuda import decode_windows_cuda

        return decode_windows_cuda(self.table, tokens, offsets, self._rules)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.table is not None:
            # Workers never need the tokenizer on the fast path; it is the bulk of the pickle.
            state["tokenizer"] = None
        return state

    def __repr__(self) -> str:
        path = (
            "byte table" if self.exact_fast_path else f"tokenizer.decode ({self.fallback_reason})"
        )
        return f"Detokenizer({self.name!r}, vocab_size={self.vocab_size}, {path})"


# -- the on-disk cache of checked byte tables ----------------------------------------------------
# Bump when the table layout or the checks change: old entries are then ignored.
TABLE_CACHE_VERSION = 1
_TABLE_ARRAYS = ("data", "rest_off", "first_off", "rest_kind", "first_kind")


def cache_dir() -> str | None:
    """Where checked byte tables are cached: ``$DEXPORT_CACHE_DIR`` (``none`` turns it off),
    else ``$XDG_CACHE_HOME/dexport`` or ``~/.cache/dexport``; the tables go in ``byte-tables/``."""
    root = os.environ.get("DEXPORT_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "dexport")
    if root.strip().lower() in ("", "none", "off"):
        return None
    return os.path.join(root, "byte-tables")


def _cache_key(path: str, skip_special_tokens: bool) -> str | None:
    """sha256 over the tokenizer's files, the libraries that decode it and the table version."""
    from importlib.metadata import PackageNotFoundError, version

    if cache_dir() is None:
        return None
    digest = hashlib.sha256(f"v{TABLE_CACHE_VERSION} skip={skip_special_tokens}".encode())
    for package in ("tokenizers", "transformers"):
        try:
            digest.update(f" {package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f" {package}=none".encode())
    digest.update(tokenizer_fingerprint(path).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(path: str) -> str:
    """sha256 over a tokenizer's files (every file of its folder, or the one file): what a
    resumed export compares, so that files changed in place are not mixed into one output, and
    part of the table cache's key. Computed once per process while the files stay as they are
    (an export asks for it twice: its parameters and the table cache)."""
    return _files_sha256(_tokenizer_files(path))


def _tokenizer_files(path: str) -> tuple[tuple[str, int, int], ...]:
    """``(path, size, mtime_ns)`` of each file the fingerprint covers, in order."""
    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
        paths = [os.path.join(path, f) for f in names]
    else:
        paths = [path]
    return tuple((p, (st := os.stat(p)).st_size, st.st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=8)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for file, _, _ in files:
        digest.update(f"\n{os.path.basename(file)}\n".encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _load_cached(key: str | None, *, name: str, skip_special_tokens: bool) -> Detokenizer | None:
    folder = cache_dir()
    if key is None or folder is None:
        return None
    try:
        with np.load(os.path.join(folder, f"{key}.npz"), allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in _TABLE_ARRAYS}
            meta = json.loads(str(stored["meta"]))
    except (OSError, KeyError, ValueError):
        return None  # absent or unreadable: build it again
    table = ByteTable(
        **arrays,
        lossy=bool(meta["lossy"]),
        strip_char=int(meta["strip_char"]),
        strip_count=int(meta["strip_count"]),
        decoder_chain=str(meta["decoder_chain"]),
    )
    detok = Detokenizer.__new__(Detokenizer)
    detok.tokenizer = None
    detok.threads = 1
    detok.skip_special_tokens = skip_special_tokens
    detok.name = name
    detok.table = table
    detok.cleanup = bool(meta["cleanup"])
    detok.fallback_reason = ""
    detok.exact_fast_path = True
    detok.vocab_size = table.vocab_size
    detok._rules = pack_rules(CLEANUP_RULES if detok.cleanup else ())
    return detok


def _save_cached(key: str | None, detok: Detokenizer) -> None:
    folder = cache_dir()
    if key is None or folder is None or detok.table is None:
        return
    table = detok.table
    meta = {
        "lossy": table.lossy,
        "strip_char": table.strip_char,
        "strip_count": table.strip_count,
        "decoder_chain": table.decoder_chain,
        "cleanup": detok.cleanup,
        "tokenizer": detok.name,
    }
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{key}.{os.getpid()}.tmp.npz")
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                **{k: getattr(table, k) for k in _TABLE_ARRAYS},
            )
        os.replace(tmp, os.path.join(folder, f"{key}.npz"))
    except OSError as exc:  # a read-only home is no reason to fail the export
        log.debug("byte table not cached: %s", exc)


def _anchor_id(table: ByteTable) -> int:
    """An id that decodes to plain ASCII text in both forms, to stand before probed ids."""
    data = table.data
    fallback = None
    for i in range(table.vocab_size):
        if table.rest_kind[i] != KIND_TEXT or table.first_kind[i] != KIND_TEXT:
            continue
        rest = data[table.rest_off[i] : table.rest_off[i + 1]].tobytes()
        first = data[table.first_off[i] : table.first_off[i + 1]].tobytes()
        if rest and first and rest.strip().isalnum() and first.isalnum() and rest.isascii():
            return i
        if fallback is None and rest and first:
            fallback = i
    if fallback is None:
        raise UnsupportedDecoder("no token decodes to plain text")
    return fallback


def _check_windows(tokens: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be a 1-D integer array, got {tokens.dtype} with shape {tokens.shape}"
        )
    if tokens.dtype not in _KERNEL_DTYPES:
        # Each dtype compiles its own copy of the kernel (seconds): Megatron's uint16 is
        # widened to int32 (a cheap copy next to decoding), other widths to int64.
        small = (
            tokens.dtype.itemsize < 4
            or tokens.dtype == np.uint32
            and tokens.size
            and tokens.max() < 2**31
        )
        tokens = tokens.astype(np.int32 if small else np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("offsets must be a 1-D int64 array of length n_windows + 1")
    if offsets[0] < 0 or offsets[-1] > tokens.shape[0] or np.any(offsets[1:] < offsets[:-1]):
        raise ValueError("offsets must be non-decreasing and within the tokens array")
    if tokens.shape[0] and np.issubdtype(tokens.dtype, np.signedinteger) and tokens.min() < 0:
        raise ValueError("token ids must not be negative")
    return np.ascontiguousarray(tokens), offsets


def _finish(
    data: np.ndarray,
    offsets: np.ndarray,
    json: bool,
    frames: tuple[tuple[Any, Any], tuple[Any, Any]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain decoded windows as :meth:`Detokenizer.decode_to_bytes` returns them for ``json``
    and ``frames`` (on the host)."""
    if not json and frames is None:
        return data, offsets
    from gpu.text_escape import framed_column

    return framed_column(data, offsets, frames, json=json)


def _split(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    buf = data.tobytes()
    offs = offsets.tolist()
    return [buf[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:], strict=True)]


def _encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _asnumpy(x: Any) -> np.ndarray:
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


__all__ = ["Detokenizer"]
