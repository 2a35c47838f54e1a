"""Byte table of a Hugging Face fast tokenizer: what each token id contributes to decoded text.

For the decoder chains that byte-level BPE (GPT-2, NeoX, Llama-3, tiktoken-style), SentencePiece
with byte fallback (Llama-2, Mistral) and WordPiece (BERT) use, decoding a window is a
concatenation of per-token byte strings followed by a few whole-window rules. This module reads
the tokenizer's own vocabulary and decoder chain once and builds those byte strings:

- ``rest`` form: the bytes of a token anywhere but first in the window; ``first`` form: the bytes
  when it is the first token the decoder sees (Metaspace drops ``▁`` there, WordPiece neither
  adds a space nor strips ``##``). Skipped special tokens are removed before the decoder runs, so
  the first token is the first one not skipped.
- a kind per id and form: complete UTF-8 text, raw bytes that may be partial UTF-8 (byte-level
  BPE), a byte-fallback byte (``<0xNN>``), or nothing (skipped special token or unused id).
- whole-window rules: lossy UTF-8 decoding of the concatenation (ByteLevel decoder), strip of
  leading characters (``Strip`` after ``Fuse``).

Per-token steps (Replace, Strip, Metaspace, WordPiece) are evaluated with the tokenizer's own
decoder objects, so their exact semantics come from ``tokenizers`` itself. Chains with steps
that look at neighbouring tokens (CTC, BPEDecoder's last-token suffix) or rewrite the fused
string are not modelled: :class:`UnsupportedDecoder` says why, and the caller falls back to
``tokenizer.decode``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

# Kinds of a token form (values shared with the kernels).
KIND_TEXT = 0  # complete UTF-8 text
KIND_PARTIAL = 1  # raw bytes, possibly partial UTF-8 (byte-level BPE); window needs validation
KIND_BYTE = 2  # one byte-fallback byte; runs of them are validated together
KIND_SKIP = 3  # contributes nothing and is invisible to the decoder

# Decoder steps that transform each token on its own (possibly differently at position 0).
_PER_TOKEN_STEPS = {"Replace", "Strip", "Metaspace", "WordPiece"}
# Anchor token used to evaluate a step at a position other than the first.
_ANCHOR = "a"


class UnsupportedDecoder(Exception):
    """The tokenizer's decoder chain is not one the byte table can model exactly."""


@dataclass(frozen=True)
class ByteTable:
    """Per-id byte strings and whole-window rules of one tokenizer (see module docstring).

    ``data`` holds every form's bytes; ``rest_off`` / ``first_off`` (int64, ``vocab_size + 1``)
    delimit id ``i``'s forms as ``data[off[i]:off[i + 1]]``; ``rest_kind`` / ``first_kind``
    (uint8) give their kinds. ``lossy``: the window's bytes are decoded as UTF-8 with
    replacement. ``strip_char`` / ``strip_count``: up to ``strip_count`` leading characters
    equal to ``strip_char`` (an ASCII code, -1 for none) are removed from each window.
    ``decoder_chain`` names the steps, for logs.
    """

    data: np.ndarray
    rest_off: np.ndarray
    first_off: np.ndarray
    rest_kind: np.ndarray
    first_kind: np.ndarray
    lossy: bool
    strip_char: int
    strip_count: int
    decoder_chain: str
    # Text forms are JSON-escaped (:attr:`json_escaped`); byte-fallback bytes stay raw.
    escaped: bool = False

    def __getstate__(self) -> dict[str, Any]:
        # Derived arrays (and device copies) are rebuilt where needed rather than pickled.
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("packed", "meta", "json_escaped", "rest_sizes", "_device_cache")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def vocab_size(self) -> int:
        """Number of ids the table covers (ids beyond decode to nothing, as in ``tokenizers``)."""
        return int(self.rest_kind.shape[0])

    @functools.cached_property
    def rest_sizes(self) -> np.ndarray:
        """Bytes each id writes after the first position (int64 ``[vocab_size]``), as written:
        in an escaped table a byte-fallback byte that JSON escapes counts as its escape."""
        sizes = np.diff(self.rest_off)
        if self.escaped:
            from gpu.text_escape import JSON_ESCAPES

            is_byte = self.rest_kind == KIND_BYTE
            raw = self.data[self.rest_off[:-1][is_byte]]
            sizes[is_byte] += JSON_ESCAPES[0][raw]
        return sizes

    @functools.cached_property
    def max_first_extra(self) -> int:
        """Largest number of bytes a first form has beyond the rest form of the same id."""
        extra = np.diff(self.first_off) - np.diff(self.rest_off)
        return int(max(0, extra.max(initial=0)))

    @functools.cached_property
    def packed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table as the CPU kernel reads it: ``(rest, first, data)``.

        ``rest`` and ``first`` are uint64 ``[vocab_size]``, one word per form so that a
        131k-token vocabulary stays within 1 MiB of cache. Top byte: ``kind << 4 | n``. For
        ``n <= 7`` the low 7 bytes hold the form itself (little-endian), written with one 8-byte
        store; ``n == 15`` marks a longer form whose offset into ``data`` is in bits 16..55 and
        length in bits 0..15. ``data`` is padded with 8 zero bytes so 8-byte loads of the last
        form stay inside it.
        """
        data = np.concatenate([self.data, np.zeros(8, dtype=np.uint8)])
        # Every 8-byte little-endian word of the data, one per byte offset (an unaligned
        # strided view, no copy): a form's first 7 bytes are one gather and a mask.
        words = np.ndarray((data.size - 7,), dtype="<u8", buffer=data, strides=(1,))
        packed = []
        for off, kind in ((self.rest_off, self.rest_kind), (self.first_off, self.first_kind)):
            lengths = np.diff(off)
            if lengths.size and lengths.max() > 0xFFFF:
                raise UnsupportedDecoder("a token decodes to more than 65535 bytes")
            starts = off[:-1]
            short = lengths <= 7
            keep = np.left_shift(np.uint64(1), (8 * np.minimum(lengths, 7)).astype(np.uint64))
            inline = words[starts] & (keep - np.uint64(1))
            long_form = (starts.astype(np.uint64) << np.uint64(16)) | lengths.astype(np.uint64)
            top = (kind.astype(np.uint64) << np.uint64(4)) | np.where(short, lengths, 15).astype(
                np.uint64
            )
            packed.append((top << np.uint64(56)) | np.where(short, inline, long_form))
        return packed[0], packed[1], data

    @functools.cached_property
    def json_escaped(self) -> ByteTable:
        """The same table with every text and partial form JSON-escaped as inside a string
        literal (what ``orjson`` writes for it). Byte-fallback forms stay raw: a run of them is
        validated first and escaped as it ends. Escaping commutes with the window rules (it
        only rewrites ASCII bytes, which end any invalid UTF-8 subpart and never sit inside a
        character), so decoding with this table gives the escaped text."""
        from gpu.text_escape import json_escaped_column

        parts, offs = [], []
        base = 0
        for off, kind in ((self.rest_off, self.rest_kind), (self.first_off, self.first_kind)):
            data, out_off = json_escaped_column(self.data, off, kind == KIND_BYTE)
            parts.append(data)
            offs.append(out_off + base)
            base += data.shape[0]
        return dataclasses.replace(
            self, data=np.concatenate(parts), rest_off=offs[0], first_off=offs[1], escaped=True
        )

    @functools.cached_property
    def meta(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rest, first)`` uint64 ``[vocab_size]``: ``offset << 24 | length << 8 | kind``
        (the GPU kernel's layout)."""
        out = []
        for off, kind in ((self.rest_off, self.rest_kind), (self.first_off, self.first_kind)):
            lengths = np.diff(off)
            if lengths.size and lengths.max() > 0xFFFF:
                raise UnsupportedDecoder("a token decodes to more than 65535 bytes")
            out.append(
                (off[:-1].astype(np.uint64) << np.uint64(24))
                | (lengths.astype(np.uint64) << np.uint64(8))
                | kind.astype(np.uint64)
            )
        return out[0], out[1]


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable character -> byte map used by the ByteLevel decoder."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_LEVEL = _byte_level_alphabet()
_TO_BYTES = str.maketrans({c: chr(b) for c, b in _BYTE_LEVEL.items()})
_DROP_ALPHABET = str.maketrans(dict.fromkeys(_BYTE_LEVEL))
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _fallback_byte(token: str) -> int:
    """The byte of a ``<0xNN>`` token as ``tokenizers``' ByteFallback reads it, else -1.

    It tests the UTF-8 length (6 bytes), the ``<0x`` prefix and ``>`` suffix, then parses the
    two middle bytes as a base-16 ``u8`` — which, as Rust's ``from_str_radix``, accepts a
    leading ``+``.
    """
    raw = token.encode("utf-8")
    if len(raw) != 6 or raw[:3] != b"<0x" or raw[5] != ord(">"):
        return -1
    hi, lo = raw[3], raw[4]
    if lo not in _HEX or (hi not in _HEX and hi != ord("+")):
        return -1
    return int(raw[3:5].decode("ascii"), 16)


def _decoder_object(step: dict[str, Any]) -> Any:
    """A ``tokenizers`` decoder object for one serialized step (exact library semantics)."""
    from tokenizers import decoders

    obj = decoders.Fuse()
    # Deserializing replaces the wrapped decoder whatever the Python class it was built as.
    obj.__setstate__(json.dumps(step).encode("utf-8"))
    return obj


def _flatten(step: dict[str, Any] | None) -> list[dict[str, Any]]:
    if step is None:
        return []
    if step.get("type") == "Sequence":
        return [s for sub in step.get("decoders", []) for s in _flatten(sub)]
    return [step]


def _apply_per_token(step: dict[str, Any], first: list, rest: list) -> None:
    """Apply a per-token step to every form in place (first forms at position 0)."""
    obj = _decoder_object(step)
    anchor_out = obj.decode([_ANCHOR])
    for forms, at_start in ((first, True), (rest, False)):
        for i, tok in enumerate(forms):
            if tok is None:
                continue
            if at_start:
                forms[i] = obj.decode([tok])
                continue
            both = obj.decode([_ANCHOR, tok])
            if not both.startswith(anchor_out):
                raise UnsupportedDecoder(f"{step['type']} step does not act token by token")
            forms[i] = both[len(anchor_out) :]


def _vocabulary(backend: Any) -> tuple[list[str | None], set[str]]:
    """Token string of every id (None for unused ids) and the contents of special tokens."""
    added = backend.get_added_tokens_decoder()
    size = max(backend.get_vocab_size(with_added_tokens=True), max(added, default=-1) + 1)
    if any(backend.id_to_token(size + k) is not None for k in range(256)):
        # Sparse ids beyond the count: only the full vocabulary tells the largest one.
        size = max(backend.get_vocab(with_added_tokens=True).values()) + 1
    tokens = [backend.id_to_token(i) for i in range(size)]
    special = {tok.content for tok in added.values() if tok.special}
    return tokens, special


def build_byte_table(backend: Any, *, skip_special_tokens: bool) -> ByteTable:
    """Build the byte table of a ``tokenizers.Tokenizer`` (a fast tokenizer's backend).

    Raises :class:`UnsupportedDecoder` when its decoder chain cannot be modelled exactly.
    """
    # Only the decoder is read: serializing the whole tokenizer costs seconds on big vocabularies.
    decoder = backend.decoder
    decoder_spec = None if decoder is None else json.loads(decoder.__getstate__())
    tokens, special = _vocabulary(backend)
    # tokenizers filters special tokens by content before the decoder runs.
    live = [
        t if t is not None and not (skip_special_tokens and t in special) else None for t in tokens
    ]
    first: list = list(live)
    rest: list = list(live)
    steps = _flatten(decoder_spec)
    names = [s.get("type", "?") for s in steps] or ["<none: tokens joined by spaces>"]
    if decoder_spec is None:
        # Without a decoder tokenizers joins the tokens with single spaces.
        rest = [None if t is None else " " + t for t in rest]
    phase = "tokens"  # then "bytes" (after ByteFallback) and "fused" (after Fuse/ByteLevel)
    byte_first: list[int] | None = None
    byte_rest: list[int] | None = None
    lossy = False
    strip_char, strip_count = -1, 0
    raw_first: list = first
    raw_rest: list = rest
    for step in steps:
        kind = step.get("type")
        if phase == "tokens" and kind in _PER_TOKEN_STEPS:
            _apply_per_token(step, first, rest)
        elif phase == "tokens" and kind == "ByteFallback":
            byte_first = [-1 if t is None else _fallback_byte(t) for t in first]
            byte_rest = [-1 if t is None else _fallback_byte(t) for t in rest]
            phase = "bytes"
        elif phase == "tokens" and kind == "ByteLevel":
            # Tokens made only of byte-alphabet characters map byte by byte; any other token
            # (an added token such as '日本') contributes its UTF-8 bytes.
            raw_rest = [None if t is None else _byte_level_bytes(t) for t in rest]
            raw_first = (
                raw_rest
                if first == rest
                else [None if t is None else _byte_level_bytes(t) for t in first]
            )
            lossy = True
            phase = "fused"
        elif kind == "Fuse" and phase in ("tokens", "bytes", "fused"):
            phase = "fused"
        elif (
            phase == "fused"
            and kind == "Strip"
            and strip_char < 0
            and int(step.get("stop", 0)) == 0
        ):
            content = str(step.get("content", ""))
            if len(content) != 1 or ord(content) >= 128:
                raise UnsupportedDecoder(f"Strip of {content!r} after Fuse")
            strip_char, strip_count = ord(content), int(step.get("start", 0))
        else:
            raise UnsupportedDecoder(f"decoder step {kind} in chain {' > '.join(names)}")
    if not lossy:
        raw_first = [None if t is None else t.encode("utf-8") for t in first]
        raw_rest = [None if t is None else t.encode("utf-8") for t in rest]
    if byte_rest is not None and byte_first is not None:
        raw_rest = [b if b >= 0 else r for r, b in zip(raw_rest, byte_rest, strict=True)]
        raw_first = [b if b >= 0 else r for r, b in zip(raw_first, byte_first, strict=True)]
    return table_from_forms(
        raw_rest,
        raw_first,
        lossy=lossy,
        strip_char=strip_char,
        strip_count=strip_count,
        decoder_chain=" > ".join(names),
    )


Form = bytes | int | None


def table_from_forms(
    rest: list[Form],
    first: list[Form] | None = None,
    *,
    lossy: bool = False,
    strip_char: int = -1,
    strip_count: int = 0,
    decoder_chain: str = "",
) -> ByteTable:
    """Build a :class:`ByteTable` from each id's forms.

    A form is ``bytes`` (text, or raw bytes in a ``lossy`` table), an ``int`` 0..255 (a
    byte-fallback byte) or None (the id decodes to nothing). ``first`` defaults to ``rest``.
    """
    if first is None:
        first = rest
    if len(first) != len(rest):
        raise ValueError("first and rest forms must cover the same ids")
    data = bytearray()
    offs, kinds = [], []
    for forms in (rest, first):
        off = np.zeros(len(forms) + 1, dtype=np.int64)
        kind_arr = np.empty(len(forms), dtype=np.uint8)
        off[0] = len(data)
        for i, form in enumerate(forms):
            if form is None:
                kind_arr[i] = KIND_SKIP
            elif isinstance(form, int):
                kind_arr[i] = KIND_BYTE
                data.append(form)
            else:
                kind_arr[i] = KIND_PARTIAL if lossy and not _is_utf8(form) else KIND_TEXT
                data += form
            off[i + 1] = len(data)
        offs.append(off)
        kinds.append(kind_arr)
    return ByteTable(
        data=np.frombuffer(bytes(data), dtype=np.uint8).copy(),
        rest_off=offs[0],
        first_off=offs[1],
        rest_kind=kinds[0],
        first_kind=kinds[1],
        lossy=lossy,
        strip_char=strip_char,
        strip_count=strip_count,
        decoder_chain=decoder_chain,
    )


def _byte_level_bytes(token: str) -> bytes:
    if token.translate(_DROP_ALPHABET):
        return token.encode("utf-8")  # not only byte-alphabet characters: raw UTF-8
    return token.translate(_TO_BYTES).encode("latin-1")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
