"""Detokenizer text equals ``tokenizer.decode``, for every tokenizer family, on any window.

Families: GPT-2-style byte-level BPE (trained here), Llama-style SentencePiece BPE with byte
fallback (trained here), BERT-style WordPiece (trained here), and two real vocabularies shipped
by ``mistral-common``: Mistral-7B's SentencePiece model and the tiktoken-style tekken BPE.
Windows: random ids (special, added and unknown ids included), slices of real encoded text,
slices cut inside multi-byte characters, real text with special/added tokens spliced in;
``skip_special_tokens`` on and off.
"""

# Fixtures are imported from tokenizers_fixtures and then named as test arguments:
# ruff: noqa: F811
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers_fixtures import (  # noqa: F401  (fixtures used by name)
    byte_bpe_tokenizer_path,
    mistral_tokenizer_path,
    multilingual_text,
    sentencepiece_tokenizer_path,
    tekken_tokenizer_path,
    wordpiece_tokenizer_path,
)

from gpu.byte_table import KIND_BYTE, KIND_PARTIAL
from gpu.detok import Detokenizer
from gpu.errors import BackendError as UserError


@pytest.fixture(autouse=True)
def _no_table_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Detokenizer here is built and checked against transformers, and keeps its
    tokenizer: a table cached by an earlier test of the session (any job that detokenized the
    same tokenizer) would load without one. The cache has its own tests."""
    monkeypatch.setenv("DEXPORT_CACHE_DIR", "none")


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FAMILIES = ["byte_bpe", "sentencepiece", "wordpiece", "mistral", "tekken"]
ENGLISH = (
    "The quick brown fox doesn't jump over the lazy dog. It's 3.14 , isn't it ? "
    "We've seen they're here ! \"Quotes\" and 'single' ones ; (parens) [brackets] {braces}\n"
)
# Scripts absent from the fixtures' training text: byte-level BPE splits their characters.
RARE_SCRIPTS = "नमस्ते दुनिया ภาษาไทย Հայերեն ქართული ꦧꦱꦗꦮ 𐌰𐌱𐌲 ᚠᚢᚦ 🦀🦜"


@dataclass
class Case:
    name: str
    tokenizer: Any
    detok: dict[bool, Detokenizer]  # by skip_special_tokens
    stream: np.ndarray  # real text encoded, documents separated by a special token
    cut_positions: np.ndarray  # stream positions holding a partial or byte-fallback token
    special_ids: list[int]


@pytest.fixture(scope="module", params=FAMILIES)
def case(request: pytest.FixtureRequest) -> Case:
    from transformers import AutoTokenizer

    path = request.getfixturevalue(f"{request.param}_tokenizer_path")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    detok = {
        skip: Detokenizer.from_tokenizer(tokenizer, skip_special_tokens=skip)
        for skip in (False, True)
    }
    for d in detok.values():
        assert d.exact_fast_path, d.fallback_reason
    added = tokenizer.backend_tokenizer.get_added_tokens_decoder()
    special_ids = sorted(added)
    sep = special_ids[-1] if special_ids else 0
    docs = multilingual_text(120, seed=11) + [ENGLISH] * 5 + [RARE_SCRIPTS] * 3
    encoded = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    stream = np.asarray([t for e in encoded for t in [*e.ids, sep]], dtype=np.int64)
    table = detok[False].table
    assert table is not None
    partial = np.isin(table.rest_kind[stream], [KIND_PARTIAL, KIND_BYTE])
    return Case(request.param, tokenizer, detok, stream, np.flatnonzero(partial), special_ids)


def flat(windows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.asarray([t for w in windows for t in w], dtype=np.int64)
    offsets = np.zeros(len(windows) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in windows], out=offsets[1:])
    return tokens, offsets


def assert_decodes_like_tokenizer(case: Case, windows: list[list[int]], skip: bool) -> None:
    tokens, offsets = flat(windows)
    detok = case.detok[skip]
    want = [case.tokenizer.decode(w, skip_special_tokens=skip) for w in windows]
    assert detok.decode(tokens, offsets) == want
    data, offs = detok.decode_to_bytes(tokens, offsets)
    assert data.dtype == np.uint8 and offs.dtype == np.int64
    assert [data[a:b].tobytes().decode() for a, b in zip(offs[:-1], offs[1:], strict=True)] == want
    # JSON literals written by the kernel (escaped table forms), framed as JSONL lines.
    n = len(windows)
    before = [b'{"i":%d,"content":' % i for i in range(n)]
    after = [b"}\n"] * n
    data, offs = detok.decode_to_bytes(
        tokens, offsets, json=True, frames=(byte_column(before), byte_column(after))
    )
    lines = [data[a:b].tobytes() for a, b in zip(offs[:-1], offs[1:], strict=True)]
    assert lines == [orjson.dumps({"i": i, "content": w}) + b"\n" for i, w in enumerate(want)]


def byte_column(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    return np.frombuffer(b"".join(pieces), dtype=np.uint8).copy(), offsets


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_random_windows(case: Case, data: st.DataObject, skip: bool) -> None:
    vocab = case.detok[False].vocab_size
    ids = st.one_of(st.integers(0, vocab - 1), st.sampled_from(case.special_ids or [0]))
    windows = data.draw(st.lists(st.lists(ids, max_size=60), min_size=1, max_size=6))
    assert_decodes_like_tokenizer(case, windows, skip)


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_real_text_windows(case: Case, data: st.DataObject, skip: bool) -> None:
    n = len(case.stream)
    windows = []
    for _ in range(data.draw(st.integers(1, 6))):
        start = data.draw(st.integers(0, n - 1))
        length = data.draw(st.integers(0, 300))
        windows.append(case.stream[start : start + length].tolist())
    assert_decodes_like_tokenizer(case, windows, skip)


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_windows_cut_inside_characters(case: Case, data: st.DataObject, skip: bool) -> None:
    if len(case.cut_positions) == 0:
        pytest.skip(f"{case.name} never splits a character across tokens in this text")
    windows = []
    for _ in range(data.draw(st.integers(1, 6))):
        cut = int(data.draw(st.sampled_from(case.cut_positions.tolist())))
        length = data.draw(st.integers(1, 80))
        # The window starts or ends right at the token holding part of a character.
        if data.draw(st.booleans()):
            windows.append(case.stream[cut : cut + length].tolist())
        else:
            windows.append(case.stream[max(0, cut - length) : cut + 1].tolist())
    assert_decodes_like_tokenizer(case, windows, skip)


@SETTINGS
@given(data=st.data(), skip=st.booleans())
def test_special_and_added_tokens_in_text(case: Case, data: st.DataObject, skip: bool) -> None:
    n = len(case.stream)
    windows = []
    for _ in range(data.draw(st.integers(1, 4))):
        start = data.draw(st.integers(0, n - 1))
        window = case.stream[start : start + data.draw(st.integers(0, 60))].tolist()
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(window)))
            window.insert(at, data.draw(st.sampled_from(case.special_ids or [0])))
        windows.append(window)
    assert_decodes_like_tokenizer(case, windows, skip)


def test_cleanup_found_by_probing(case: Case) -> None:
    """transformers 5 cleans up WordPiece output and leaves BPE output alone."""
    assert case.detok[False].cleanup is (case.name == "wordpiece")


# -- fallback --------------------------------------------------------------------------------


def _with_decoder(path: Path, decoder: Any) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    backend.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_unmodelled_decoder_falls_back_and_logs_once(
    sentencepiece_tokenizer_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tokenizers import decoders

    tokenizer = _with_decoder(sentencepiece_tokenizer_path, decoders.CTC())
    tokenizer.name_or_path = "ctc-test"
    with caplog.at_level(logging.WARNING, logger="dexport.detok"):
        first = Detokenizer.from_tokenizer(tokenizer)
        Detokenizer.from_tokenizer(tokenizer)
    assert not first.exact_fast_path and "CTC" in first.fallback_reason
    assert sum("falls back to tokenizer.decode" in r.message for r in caplog.records) == 1
    windows = [[5, 5, 300, 301, 301, 2], [], [259, 259]]
    tokens, offsets = flat(windows)
    want = [tokenizer.decode(w) for w in windows]
    assert first.decode(tokens, offsets) == want
    data, offs = first.decode_to_bytes(tokens, offsets)
    assert data.tobytes().decode() == "".join(want)
    assert offs.tolist() == np.cumsum([0] + [len(w.encode()) for w in want]).tolist()


def test_mismatch_found_by_the_check_falls_back(wordpiece_tokenizer_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(wordpiece_tokenizer_path))
    # A tokenizer whose cleanup is not transformers' standard one cannot use the table.
    tokenizer.clean_up_tokenization = lambda text: text.replace(" ", "_")
    detok = Detokenizer.from_tokenizer(tokenizer)
    assert not detok.exact_fast_path and "differs" in detok.fallback_reason
    tokens, offsets = flat([[10, 11, 12]])
    assert detok.decode(tokens, offsets) == [tokenizer.decode([10, 11, 12])]


@pytest.mark.parametrize("variant", ["metaspace", "none", "strip_per_token"])
def test_other_modelled_decoders(sentencepiece_tokenizer_path: Path, variant: str) -> None:
    from tokenizers import decoders

    decoder = {
        "metaspace": decoders.Metaspace(replacement="▁", prepend_scheme="always"),
        "none": None,
        "strip_per_token": decoders.Sequence(
            [decoders.Strip(content="▁", left=1, right=0), decoders.ByteFallback(), decoders.Fuse()]
        ),
    }[variant]
    tokenizer = _with_decoder(sentencepiece_tokenizer_path, decoder)
    detok = Detokenizer.from_tokenizer(tokenizer)
    assert detok.exact_fast_path, detok.fallback_reason
    rng = np.random.default_rng(1)
    windows = [rng.integers(0, detok.vocab_size, rng.integers(0, 50)).tolist() for _ in range(200)]
    tokens, offsets = flat(windows)
    assert detok.decode(tokens, offsets) == [tokenizer.decode(w) for w in windows]


# -- loading and inputs ----------------------------------------------------------------------


def test_from_pretrained_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found") as err:
        Detokenizer.from_pretrained(str(tmp_path / "nope"))
    assert "\n" not in str(err.value)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="broken"):
        Detokenizer.from_pretrained(str(tmp_path / "broken"))


def test_inputs_of_any_int_dtype_and_offsets(byte_bpe_tokenizer_path: Path) -> None:
    detok = Detokenizer.from_pretrained(str(byte_bpe_tokenizer_path))
    tok = detok.tokenizer
    ids = tok.encode("Hello wörld 🙂 日本", add_special_tokens=False)
    want = tok.decode(ids[2:])
    for dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64):
        tokens = np.asarray(ids, dtype=dtype)
        assert detok.decode(tokens, np.array([2, len(ids)])) == [want]
    assert detok.decode(np.asarray(ids), np.array([0])) == []
    assert detok.decode(np.asarray([], dtype=np.int32), np.array([0, 0])) == [""]
    # ids the tokenizer does not know decode to nothing, as in tokenizers
    unknown = detok.vocab_size + 10
    assert detok.decode(np.asarray([unknown, *ids]), np.array([0, len(ids) + 1])) == [
        tok.decode([unknown, *ids])
    ]
    with pytest.raises(ValueError, match="negative"):
        detok.decode(np.asarray([-1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="offsets"):
        detok.decode(np.asarray(ids), np.array([0, len(ids) + 1]))


def test_pickle_and_threads(mistral_tokenizer_path: Path) -> None:
    detok = Detokenizer.from_pretrained(str(mistral_tokenizer_path), threads=1)
    rng = np.random.default_rng(3)
    windows = [rng.integers(0, detok.vocab_size, 100).tolist() for _ in range(64)]
    tokens, offsets = flat(windows)
    one = detok.decode_to_bytes(tokens, offsets)
    clone = pickle.loads(pickle.dumps(detok))
    assert clone.tokenizer is None and clone.exact_fast_path
    clone.threads = 3
    three = clone.decode_to_bytes(tokens, offsets)
    assert one[0].tobytes() == three[0].tobytes() and one[1].tolist() == three[1].tolist()


def test_json_when_the_strip_touches_what_json_escapes(mistral_tokenizer_path: Path) -> None:
    """A table the kernel cannot escape as it decodes (a strip of '"') still gives JSON
    literals: decoded plain, then escaped and framed on the host."""
    import copy
    import dataclasses

    from gpu.text_escape import framed_column

    base = Detokenizer.from_pretrained(str(mistral_tokenizer_path))
    odd = copy.copy(base)
    odd.table = dataclasses.replace(base.table, strip_char=ord('"'), strip_count=1)
    assert base._json_in_kernel and not odd._json_in_kernel
    rng = np.random.default_rng(5)
    tokens, offsets = flat([rng.integers(0, odd.vocab_size, 50).tolist() for _ in range(9)])
    frames = (byte_column([b"<"] * 9), byte_column([b">"] * 9))
    got = odd.decode_to_bytes(tokens, offsets, json=True, frames=frames)
    want = framed_column(*odd.decode_to_bytes(tokens, offsets), frames, json=True)
    assert got[0].tobytes() == want[0].tobytes() and got[1].tolist() == want[1].tolist()


# -- GPU -------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_decode_matches_cpu(case: Case) -> None:
    import cupy

    from gpu.detok_cuda import cudf_string_column

    rng = np.random.default_rng(5)
    starts = rng.integers(0, len(case.stream) - 200, 300)
    windows = [case.stream[s : s + rng.integers(0, 200)].tolist() for s in starts]
    tokens, offsets = flat(windows)
    for skip in (False, True):
        detok = case.detok[skip]
        want_data, want_off = detok.decode_to_bytes(tokens, offsets)
        for dtype in (cupy.int32, cupy.int64, cupy.uint16):
            if dtype == cupy.uint16 and detok.vocab_size > 65535:
                continue
            data, offs = detok.decode_to_bytes(
                cupy.asarray(tokens, dtype=dtype), cupy.asarray(offsets)
            )
            assert isinstance(data, cupy.ndarray)
            assert data.get().tobytes() == want_data.tobytes()
            assert offs.get().tolist() == want_off.tolist()
        series = cudf_string_column(data, offs)
        assert series.to_arrow().to_pylist() == detok.decode(tokens, offsets)
