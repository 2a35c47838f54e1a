"""The detokenization kernels on hand-made byte tables, against Python/Rust reference rules.

The CPU kernel (Numba) and the GPU kernel source (compiled here with the host C++ compiler and
driven through the same array-namespace code as on CuPy) must agree with:
- Python's ``bytes.decode('utf-8', 'replace')`` for lossy windows (ByteLevel);
- tokenizers' ByteFallback (a valid run is its text, an invalid run one U+FFFD per byte);
- Strip of leading characters after Fuse, and transformers' ``clean_up_tokenization``.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpu.byte_table import table_from_forms
from gpu.detok_cuda import KERNEL_SOURCE, decode_windows_device
from gpu.detok_kernels import CLEANUP_RULES, decode_windows_cpu, json_safe_rules, pack_rules

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_RULES = pack_rules(())

# Ids 0..255: the single bytes; then a few multi-byte pieces; the last id decodes to nothing.
BYTE_PIECES = [bytes([b]) for b in range(256)] + [
    "é".encode(),
    "日本".encode(),
    "🙂".encode(),
    "🙂".encode()[:2],
    "🙂".encode()[2:],
    b" the",
    b"",
]
LOSSY = table_from_forms([*BYTE_PIECES, None], lossy=True)
SKIP_ID = len(BYTE_PIECES)
EMPTY_ID = BYTE_PIECES.index(b"")


def windows_of(parts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    flat = np.asarray([t for w in parts for t in w], dtype=np.int64)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in parts], out=offsets[1:])
    return flat, offsets


def split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    buf = data.tobytes()
    return [buf[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


# -- the GPU kernel source, compiled for the host ---------------------------------------------

_ARGTYPES = {
    "detok_windows": "PPLPPLPILPPPLPPPP",
    "compact_windows": "PPPLP",
}


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory):
    """A launcher running KERNEL_SOURCE compiled with g++ (int64 tokens)."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no host C++ compiler to build the GPU kernel source")
    tmp = tmp_path_factory.mktemp("kernel")
    src = tmp / "kernel.cpp"
    src.write_text(KERNEL_SOURCE)
    lib_path = tmp / "kernel.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-DTOKEN_T=long long", str(src), "-o", str(lib_path)],
        check=True,
    )
    lib = ctypes.CDLL(str(lib_path))
    kinds = {"P": ctypes.c_void_p, "L": ctypes.c_longlong, "I": ctypes.c_int}
    for name, spec in _ARGTYPES.items():
        getattr(lib, name).argtypes = [kinds[c] for c in spec]

    def launch(name: str, n_windows: int, token_dtype, *args) -> None:
        assert np.dtype(token_dtype) == np.int64
        converted = [a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args]
        getattr(lib, name)(*converted)

    return launch


def run_both(table, tokens, offsets, rules, host_kernels) -> list[bytes]:
    """Decode with the Numba kernel and the GPU kernel source; check they agree, and that the
    Numba kernel's JSON lines hold the same text."""
    cpu = split(*decode_windows_cpu(table, tokens, offsets, rules))
    if host_kernels is not None:
        dev = split(*decode_windows_device(table, tokens, offsets, rules, np, host_kernels))
        assert dev == cpu
    assert_json_lines(table, tokens, offsets, rules, cpu)
    return cpu


def bytes_column(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8).copy(), offsets


def assert_json_lines(table, tokens, offsets, rules, plain: list[bytes]) -> None:
    """JSON mode (escaped table, escaping byte-fallback runs as they end) writes each window
    as ``orjson.dumps(text)``, and between its frame pieces, in one or several blocks."""
    literals = split(*decode_windows_cpu(table.json_escaped, tokens, offsets, rules, json=True))
    assert literals == [orjson.dumps(p.decode()) for p in plain]
    before = [b'{"i":%d,"text":' % i for i in range(len(plain))]
    after = [b"}\n" if i % 2 else b"" for i in range(len(plain))]
    framed = decode_windows_cpu(
        table.json_escaped,
        tokens,
        offsets,
        rules,
        threads=2,
        json=True,
        frames=(bytes_column(before), bytes_column(after)),
    )
    assert split(*framed) == [
        b + lit + a for b, lit, a in zip(before, literals, after, strict=True)
    ]


# -- lossy UTF-8 (ByteLevel) -----------------------------------------------------------------


@SETTINGS
@given(st.lists(st.lists(st.integers(0, SKIP_ID), max_size=40), max_size=8))
@example(windows=[[194, EMPTY_ID, 128]])  # an empty token inside a character: bytes still meet
def test_lossy_windows_match_python_replace(host_kernels, windows) -> None:
    tokens, offsets = windows_of(windows)
    got = run_both(LOSSY, tokens, offsets, NO_RULES, host_kernels)
    for window, out in zip(windows, got, strict=True):
        raw = b"".join(BYTE_PIECES[t] for t in window if t != SKIP_ID)
        assert out == raw.decode("utf-8", "replace").encode()


@SETTINGS
@given(st.binary(max_size=64), st.integers(1, 4))
def test_lossy_cut_characters(host_kernels, raw: bytes, threads: int) -> None:
    """Windows cut at every byte of multi-byte text, in several threads' blocks."""
    text = ("aé日🙂" * 4).encode() + raw
    cuts = [[b for b in text[:k]] for k in range(len(text) + 1)] + [
        [b for b in text[k:]] for k in range(len(text))
    ]
    tokens, offsets = windows_of(cuts)
    got = split(*decode_windows_cpu(LOSSY, tokens, offsets, NO_RULES, threads=threads))
    assert got == [bytes(w).decode("utf-8", "replace").encode() for w in cuts]
    assert run_both(LOSSY, tokens, offsets, NO_RULES, host_kernels) == got


def test_every_byte_invalid_grows_output_threefold(host_kernels) -> None:
    """The buffer sized from the table overflows; the kernel is re-run with the worst case."""
    windows = [[0x80 + (i % 64) for i in range(100)] for _ in range(20)]
    tokens, offsets = windows_of(windows)
    got = run_both(LOSSY, tokens, offsets, NO_RULES, host_kernels)
    assert got == ["\ufffd".encode() * 100] * 20


# -- byte fallback (SentencePiece) -----------------------------------------------------------

# Ids: 0..255 byte-fallback bytes, then pieces, then a skipped special token.
SP_PIECES: list = list(range(256)) + [b" Hello", b" ", "▁x".encode(), "日".encode(), b"<s>"]
SP_SKIP = len(SP_PIECES)
SP = table_from_forms([*SP_PIECES, None], strip_char=ord(" "), strip_count=1)


def byte_fallback_reference(window: list[int]) -> bytes:
    """tokenizers' ByteFallback + Fuse + Strip(' ', 1, 0) over the forms of SP_PIECES."""
    out, run = [], bytearray()
    for t in window:
        if t == SP_SKIP:
            continue
        piece = SP_PIECES[t]
        if isinstance(piece, int):
            run.append(piece)
            continue
        out.append(_flush(run))
        out.append(piece.decode())
    out.append(_flush(run))
    text = "".join(out)
    return (text[1:] if text.startswith(" ") else text).encode()


def _flush(run: bytearray) -> str:
    try:
        text = run.decode("utf-8")
    except UnicodeDecodeError:
        text = "\ufffd" * len(run)
    run.clear()
    return text


@SETTINGS
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.integers(0, SP_SKIP),
                st.sampled_from([0x20, 0xE6, 0x97, 0xA5, 0xF0, 0x9F, SP_SKIP]),
            ),
            max_size=30,
        ),
        max_size=8,
    )
)
def test_byte_fallback_runs(host_kernels, windows) -> None:
    tokens, offsets = windows_of(windows)
    got = run_both(SP, tokens, offsets, NO_RULES, host_kernels)
    assert got == [byte_fallback_reference(w) for w in windows]


def test_byte_fallback_examples(host_kernels) -> None:
    E6, B9, A5 = 0xE6, 0x97, 0xA5  # 日 = E6 97 A5
    cases = {
        (0x22, 0x0A, 0x5C, 0x01, E6, B9, A5): '"\n\\\x01日',  # escaped once the run is valid
        (0x20, 0x0A, 0x20): "\n ",  # stripped before it is escaped
        (256 + 0, 0x09, E6): "Hello\ufffd\ufffd",
        (256 + 0, E6, 256 + 0): "Hello\ufffd Hello",  # text after a run: the run ends first
        (E6, B9, A5): "日",
        (E6, B9, A5, E6): "\ufffd" * 4,  # one invalid byte spoils the whole run
        (E6, SP_SKIP, B9, A5): "日",  # a skipped special token does not break the run
        (E6, 256 + 4, B9, A5): "\ufffd<s>\ufffd\ufffd",
        (0x20, 0x41): "A",  # a leading space made of a byte token is stripped too
        (0x20, 0xE6): "\ufffd\ufffd",
        (256 + 1, 256 + 0): " Hello",  # ' ' then ' Hello': only one space stripped
    }
    tokens, offsets = windows_of([list(k) for k in cases])
    got = run_both(SP, tokens, offsets, NO_RULES, host_kernels)
    assert [g.decode() for g in got] == list(cases.values())


# -- first forms, strip and cleanup ----------------------------------------------------------


def test_first_form_and_out_of_range_ids(host_kernels) -> None:
    table = table_from_forms([b" a", b" b", None], [b"a", b"B", None])
    tokens, offsets = windows_of([[0, 1], [2, 1, 0], [7, 0], [], [2]])
    got = run_both(table, tokens, offsets, NO_RULES, host_kernels)
    assert got == [b"a b", b"B a", b"a", b"", b""]


@SETTINGS
@given(st.lists(st.text(alphabet=" .?!,'nmtsvrexd", max_size=30), max_size=10))
def test_cleanup_rules_match_transformers(host_kernels, texts: list[str]) -> None:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    pieces = sorted(set("".join(texts))) or [" "]
    index = {c: i for i, c in enumerate(pieces)}
    table = table_from_forms([c.encode() for c in pieces])
    tokens, offsets = windows_of([[index[c] for c in t] for t in texts])
    got = run_both(table, tokens, offsets, pack_rules(CLEANUP_RULES), host_kernels)
    want = [PreTrainedTokenizerBase.clean_up_tokenization(None, t) for t in texts]  # type: ignore[arg-type]
    assert [g.decode() for g in got] == want


def test_json_safe_rules() -> None:
    assert json_safe_rules(CLEANUP_RULES) and json_safe_rules(())
    assert not json_safe_rules(((b' "', b'"'),))  # a quote is escaped: no longer matches
    assert not json_safe_rules(((b"n ", b"n"),))  # would match inside an escape (\\n )
    assert not json_safe_rules(((b" \t", b""),))


def test_lossy_windows_with_json_specials(host_kernels) -> None:
    """Partial tokens next to bytes JSON escapes: repairing commutes with escaping."""
    windows = [[0xE6, 0x22, 0x97], [0x0A, 0xF0, 0x9F, 0x5C], [0xC2, EMPTY_ID, 0x80, 0x01, 0x7F]]
    tokens, offsets = windows_of(windows)
    got = run_both(LOSSY, tokens, offsets, NO_RULES, host_kernels)
    raw = [b"".join(BYTE_PIECES[t] for t in w) for w in windows]
    assert got == [r.decode("utf-8", "replace").encode() for r in raw]


def test_pack_rules_rejects_growing_rules() -> None:
    with pytest.raises(ValueError, match="lengthen"):
        pack_rules(((b"a", b"bb"),))


def test_kernel_source_has_no_unreplaced_placeholders() -> None:
    assert "@" not in KERNEL_SOURCE


def test_escaped_table_sizes_count_escapes_of_byte_fallback_bytes() -> None:
    """The output is sized from the table: a newline made of a byte token (SentencePiece's
    <0x0A>) writes two bytes as JSON, so the first size estimate holds (no second pass)."""
    escaped = SP.json_escaped
    assert SP.rest_sizes[0x0A] == 1 and escaped.rest_sizes[0x0A] == 2
    assert escaped.rest_sizes[0x01] == 6 and escaped.rest_sizes[ord("a")] == 1
    quote = table_from_forms([b'say "hi"\n'])
    assert quote.json_escaped.rest_sizes.tolist() == [len(orjson.dumps('say "hi"\n')) - 2]
