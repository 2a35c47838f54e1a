"""Loading tokenizers from local files, for every job that reads or writes token ids.

A job loads the tokenizer once on the driver and ships a small, picklable payload to the
workers (the Rust tokenizer's JSON plus the facts the job needs); a worker parses it once per
process, cached by content hash, so workers need no access to the tokenizer's path and every
worker uses exactly the tokenizer the driver checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError


@dataclass(frozen=True)
class TokenizerPayload:
    """A tokenizer as workers receive it: the Rust tokenizer's JSON plus the facts we use."""

    json: str
    sha256: str
    name: str
    vocab_size: int
    eos_id: int | None
    bos_id: int | None
    split_special_tokens: bool
    adds_bos: bool  # the tokenizer's own template already starts every document with BOS


def load_tokenizer(path: str | os.PathLike[str]) -> TokenizerPayload:
    """Load a fast tokenizer from a local directory (``save_pretrained``) or ``tokenizer.json``.

    Raises :class:`UserError` when the path is missing, unreadable or not a fast tokenizer.
    """
    path = os.fspath(path)
    fix = (
        "pass a local directory saved by save_pretrained (with tokenizer.json) or a tokenizer.json"
        " file"
    )
    if not os.path.exists(path):
        raise UserError(f"tokenizer {path!r} not found; {fix}")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if os.path.isdir(path):
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        else:
            tok = PreTrainedTokenizerFast(tokenizer_file=path)
    except Exception as exc:  # noqa: BLE001 - any failure to parse user files is a user error
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"cannot load tokenizer {path!r} ({reason}); {fix}") from None
    name = os.path.basename(path.rstrip("/"))
    if not os.path.isdir(path):  # .../llama3/tokenizer.json is named after its folder
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) or name
    return payload_from_tokenizer(tok, name)


def payload_from_tokenizer(tok: Any, name: str | None = None) -> TokenizerPayload:
    """The payload of an already loaded Hugging Face fast tokenizer."""
    backend = getattr(tok, "backend_tokenizer", None)
    if not getattr(tok, "is_fast", False) or backend is None:
        raise UserError(
            f"tokenizer {name or type(tok).__name__!r} is not a fast (Rust) tokenizer; convert it "
            "and save it with tokenizer.json"
        )
    text = backend.to_str()
    vocab_size = max(len(tok), backend.get_vocab_size(with_added_tokens=True))
    bos = tok.bos_token_id
    probe = tok("a")["input_ids"]
    if name is None:
        name = (
            os.path.basename(str(getattr(tok, "name_or_path", "") or "").rstrip("/"))
            or type(tok).__name__
        )
    return TokenizerPayload(
        json=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        name=name,
        vocab_size=int(vocab_size),
        eos_id=tok.eos_token_id,
        bos_id=bos,
        split_special_tokens=bool(getattr(tok, "split_special_tokens", False)),
        adds_bos=bos is not None and len(probe) > 0 and probe[0] == bos,
    )


_BACKENDS: dict[str, Any] = {}


def backend_for(payload: TokenizerPayload) -> Any:
    """The Rust tokenizer of ``payload``, parsed once per process."""
    backend = _BACKENDS.get(payload.sha256)
    if backend is None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(payload.json)
        # What ``tokenizer(text)`` sets before each call: no truncation, no padding, and the
        # tokenizer's own choice about splitting special-token text.
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = payload.split_special_tokens
        _BACKENDS[payload.sha256] = backend
    return backend


@dataclass(frozen=True)
class TokenCounter:
    """A tokenizer as workers receive it: the Rust tokenizer's JSON (parsed once per process)."""

    json: str
    sha256: str
    name: str


def load_token_counter(path: str) -> TokenCounter:
    """A local tokenizer (``tokenizer.json`` or a folder saved by ``save_pretrained``)."""
    import hashlib
    import os

    candidate = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if os.path.isfile(candidate) and candidate.endswith(".json"):
        # tokenizer.json is all a count needs; skipping transformers saves seconds per run.
        from tokenizers import Tokenizer

        try:
            text = Tokenizer.from_file(candidate).to_str()
        except Exception as exc:  # the Rust parser raises plain Exceptions for bad files
            raise UserError(
                f"cannot load tokenizer {path!r} ({' '.join(str(exc).split())[:200]}); pass a "
                "tokenizer.json or a folder saved by save_pretrained"
            ) from None
    else:
        text = load_tokenizer(path).json
    name = os.path.basename(path.rstrip("/")) or path
    return TokenCounter(text, hashlib.sha256(text.encode()).hexdigest(), name)


_COUNTERS: dict[str, Any] = {}


def counter_backend(counter: TokenCounter) -> Any:
    """The Rust tokenizer of ``counter``, parsed once per process."""
    backend = _COUNTERS.get(counter.sha256)
    if backend is None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(counter.json)
        backend.no_truncation()
        backend.no_padding()
        _COUNTERS[counter.sha256] = backend
    return backend
