"""Detokenizing with any object that has ``decode``: the exact path for other tokenizers.

TokenSmith only ever calls ``tokenizer.decode(window)``, so its users pass whatever wraps their
tokenizer (a class of their own, tiktoken, a slow tokenizer). dexport's fast path needs a Hugging
Face fast tokenizer (its byte table is built from ``backend_tokenizer`` and saved with
``save_pretrained``); for every other object :class:`DecodeFallback` calls its ``decode`` once per
window, so the text is exactly what ``tokenizer.decode(window)`` returns. It has the interface of
``gpu.detok.Detokenizer`` that token exports use: :meth:`DecodeFallback.decode_to_bytes` and
:meth:`DecodeFallback.decode`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import UserError


def is_hf_tokenizer(tokenizer: Any) -> bool:
    """True for a Hugging Face fast tokenizer (``save_pretrained`` and ``backend_tokenizer``)."""
    return hasattr(tokenizer, "save_pretrained") and hasattr(tokenizer, "backend_tokenizer")


def _host(array: Any) -> np.ndarray:
    """A NumPy view of ``array`` (CuPy arrays are copied to the host)."""
    if type(array).__module__.split(".")[0] == "cupy":
        return array.get()
    return np.asarray(array)


class DecodeFallback:
    """Decode windows with ``tokenizer.decode(list_of_ids)``, one call per window.

    ``skip_special_tokens=True`` calls ``decode(ids, skip_special_tokens=True)``; otherwise
    ``decode(ids)`` with the tokenizer's own defaults, as a TokenSmith user's code would. With a
    Dask cluster the tokenizer object is pickled to the workers.
    """

    exact_fast_path = False  # no byte table: every window goes through ``decode``
    # The ids it knows: unknown for an arbitrary object, so every id goes to its ``decode``.
    vocab_size = int(np.iinfo(np.int64).max)

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = False) -> None:
        if not callable(getattr(tokenizer, "decode", None)):
            raise UserError(
                f"tokenizer {type(tokenizer).__name__!r} has no decode method; pass a local "
                "Hugging Face tokenizer folder, a tokenizer object, or any object with "
                "decode(list_of_ids) -> str"
            )
        self.tokenizer = tokenizer
        self.skip_special_tokens = bool(skip_special_tokens)
        self.name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)

    @property
    def name_or_path(self) -> str:
        """The tokenizer's name, as manifests record it."""
        return self.name

    def with_skip_special_tokens(self, skip_special_tokens: bool) -> DecodeFallback:
        """This wrapper, or one over the same tokenizer with the other ``skip_special_tokens``."""
        if bool(skip_special_tokens) == self.skip_special_tokens:
            return self
        return DecodeFallback(self.tokenizer, skip_special_tokens=skip_special_tokens)

    def decode(self, tokens: Any, offsets: Any) -> list[str]:
        """Window ``i`` (``tokens[offsets[i]:offsets[i+1]]``) decoded by ``tokenizer.decode``."""
        tokens, offsets = _host(tokens), _host(offsets).astype(np.int64, copy=False)
        if (
            offsets.ndim != 1
            or len(offsets) == 0
            or (len(offsets) > 1 and (np.diff(offsets) < 0).any())
            or offsets[0] < 0
            or offsets[-1] > len(tokens)
        ):
            raise ValueError("offsets must be non-decreasing, from 0 up to len(tokens)")
        decode = self.tokenizer.decode
        kwargs = {"skip_special_tokens": True} if self.skip_special_tokens else {}
        texts = []
        for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            try:
                text = decode(tokens[a:b].tolist(), **kwargs)
            except TypeError as exc:
                if kwargs and "skip_special_tokens" in str(exc):
                    raise UserError(
                        f"{self.name}.decode does not take skip_special_tokens; "
                        "decode without skipping special tokens"
                    ) from None
                raise
            if not isinstance(text, str):
                raise UserError(
                    f"{self.name}.decode returned {type(text).__name__}, not str; pass a "
                    "tokenizer whose decode(list_of_ids) returns text"
                )
            texts.append(text)
        return texts

    def decode_to_bytes(
        self,
        tokens: Any,
        offsets: Any,
        *,
        json: bool = False,
        frames: tuple[tuple[Any, Any], tuple[Any, Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The windows' text as UTF-8: ``(bytes uint8, offsets int64 [n+1])``, with
        ``bytes[off[i]:off[i+1]].tobytes().decode() == decode(window i)``; ``json`` and
        ``frames`` as in ``gpu.detok.Detokenizer.decode_to_bytes``."""
        encoded = []
        for text in self.decode(tokens, offsets):
            try:
                encoded.append(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise UserError(
                    f"{self.name}.decode returned text that is not valid Unicode ({exc.reason}); "
                    "it cannot be written as UTF-8"
                ) from None
        out_offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=out_offsets[1:])
        data = np.frombuffer(bytearray(b"".join(encoded)), np.uint8)
        if not json and frames is None:
            return data, out_offsets
        from gpu.text_escape import framed_column

        return framed_column(data, out_offsets, frames, json=json)

    def __repr__(self) -> str:
        return f"DecodeFallback({self.name!r}, skip_special_tokens={self.skip_special_tokens})"
