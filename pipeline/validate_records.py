"""Checking one output record against the schema; the reason codes of rejects.

A record is valid when its text field is a non-empty string (after stripping) with no NUL
characters and no unpaired surrogates (so it encodes to valid UTF-8), and every other schema
field is present with its declared type (``null`` allowed unless the field is ``required``).

Reason codes (the keys of ``rejected`` in ``dataset_stats.json``):

====================== =================================================================
``invalid_json``       the line is not JSON
``invalid_utf8``       the line holds bytes that are not UTF-8 (e.g. a truncated character)
``invalid_unicode``    a string holds an unpaired surrogate (``\\ud800``)
``not_an_object``      the line is JSON but not an object
``missing_text``       no text field
``text_not_string``    the text is a number, list, object or null
``empty_text``         the text is empty or only whitespace
``nul_in_text``        the text holds a NUL character
``missing_field:P``    required field ``P`` is absent or null (exports: any schema field absent)
``wrong_type:P``       field ``P`` has another type than the schema declares
``missing_split_key``  the field chosen with ``--split-key`` is absent
====================== =================================================================
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.schema import MISSING, Schema

_SURROGATE = re.compile("[\ud800-\udfff]")
_TYPE_OK = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) is float and math.isfinite(v),
    "bool": lambda v: type(v) is bool,
    "any": lambda v: True,
}


def check_text(text: Any) -> tuple[str, str] | None:
    """Reason a text value is unusable, or None when it is fine."""
    if text is MISSING:
        return "missing_text", "the record has no text field"
    if not isinstance(text, str):
        return "text_not_string", f"text is {_kind(text)}, expected a string"
    if not text or text.isspace():
        return "empty_text", "text is empty or whitespace only"
    if "\x00" in text:
        return "nul_in_text", f"text holds a NUL character at position {text.index(chr(0))}"
    if not text.isascii():
        bad = _SURROGATE.search(text)
        if bad is not None:
            return "invalid_unicode", f"text holds an unpaired surrogate at position {bad.start()} (not valid UTF-8)"
    return None


def validate_record(schema: Schema, record: dict, *, exported: bool = False) -> tuple[str, str] | None:
    """``(reason, detail)`` for an invalid record, else None.

    For a freshly mapped record (``exported=False``) optional fields that were absent in the
    input are set to ``None`` in place, so a valid record is ready to write. For a record read
    back from an export (``exported=True``) every schema field must be present.
    """
    for spec in schema.fields:
        parent, key = _locate(record, spec.out)
        if parent is None:
            return f"wrong_type:{spec.out.rsplit('.', 1)[0]}", f"{spec.out.rsplit('.', 1)[0]} is not an object"
        value = parent.get(key, MISSING)
        if spec.out == schema.text:
            problem = check_text(value)
            if problem:
                return problem
            continue
        if value is MISSING:
            if exported or spec.required:
                return f"missing_field:{spec.out}", f"{spec.out} is absent"
            parent[key] = None
            continue
        if value is None:
            if spec.required:
                return f"missing_field:{spec.out}", f"{spec.out} is null"
            continue
        if not _TYPE_OK[spec.type](value):
            return f"wrong_type:{spec.out}", f"{spec.out} is {_kind(value)} {_short(value)}, expected {spec.type}"
        if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
            return "invalid_unicode", f"{spec.out} holds an unpaired surrogate (not valid UTF-8)"
    return None


def _locate(record: dict, path: str) -> tuple[dict | None, str]:
    *parents, key = path.split(".")
    node: Any = record
    for p in parents:
        node = node.get(p, MISSING) if isinstance(node, dict) else None
        if node is MISSING:
            # An absent parent object: every field below it is absent too.
            return {}, key
    return (node if isinstance(node, dict) else None), key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
