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
``nested_too_deep``    the record is nested more than 254 levels deep (cannot be written back)
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

from pipeline.formats.schema import MISSING, Schema

_SURROGATE = re.compile("[\ud800-\udfff]")
_TYPE_OK = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) is float and math.isfinite(v),
    "bool": lambda v: type(v) is bool,
    "any": lambda v: True,
}


def check_text(
    text: Any, *, check_unicode: bool = True, content: bool = True
) -> tuple[str, str] | None:
    """Reason a text value is unusable, or None when it is fine. ``content=False`` checks only
    that it is a string (the corpus export checks the content of many texts at once, on its
    compute backend, and calls this again for the few it flags)."""
    if text is MISSING:
        return "missing_text", "the record has no text field"
    if type(text) is not str:
        return "text_not_string", f"text is {_kind(text)}, expected a string"
    if not content:
        return None
    if not text or text.isspace():
        return "empty_text", "text is empty or whitespace only"
    if "\x00" in text:
        return "nul_in_text", f"text holds a NUL character at position {text.index(chr(0))}"
    if check_unicode and not text.isascii():
        bad = _SURROGATE.search(text)
        if bad is not None:
            return (
                "invalid_unicode",
                f"text holds an unpaired surrogate at position {bad.start()} (not valid UTF-8)",
            )
    return None


_PLANS: dict[int, tuple[Schema, list[tuple]]] = {}
_EXACT = {"string": str, "int": int, "float": float, "bool": bool}


def _plan(schema: Schema) -> list[tuple]:
    """Fields grouped by parent object: ``(parent keys, [(key, path, spec, is_text, type)])``.

    Compiled once per schema (validation runs once per record): the parent of several fields
    (``metadata``) is looked up once per record, and the common type checks are one ``is``.
    """
    entry = _PLANS.get(id(schema))
    if entry is None or entry[0] is not schema:
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for spec in schema.fields:
            *parents, key = spec.out.split(".")
            groups.setdefault(tuple(parents), []).append(
                (key, spec.out, spec, spec.out == schema.text, _EXACT.get(spec.type))
            )
        entry = _PLANS[id(schema)] = (schema, list(groups.items()))  # kept alive: ids stay unique
    return entry[1]


def validate_record(
    schema: Schema,
    record: dict,
    *,
    exported: bool = False,
    check_unicode: bool = True,
    text_content: bool = True,
) -> tuple[str, str] | None:
    """``(reason, detail)`` for an invalid record, else None.

    For a freshly mapped record (``exported=False``) optional fields that were absent in the
    input are set to ``None`` in place, so a valid record is ready to write. For a record read
    back from an export (``exported=True``) every schema field must be present.
    ``check_unicode=False`` skips the surrogate scan of the text, for callers that encode the
    text to UTF-8 anyway (which fails on a surrogate); ``text_content=False`` skips every check
    of the text beyond "a string" (see :func:`check_text`).
    """
    for parents, fields in _plan(schema):
        parent: Any = record
        for p in parents:
            parent = parent.get(p, MISSING) if type(parent) is dict else None
            if parent is MISSING:
                parent = {}  # an absent parent object: every field below it is absent too
                break
        if type(parent) is not dict:
            where = ".".join(parents)
            return f"wrong_type:{where}", f"{where} is not an object"
        for key, out, spec, is_text, exact in fields:
            value = parent.get(key, MISSING)
            if is_text:
                problem = check_text(value, check_unicode=check_unicode, content=text_content)
                if problem:
                    return problem
                continue
            kind = type(value)
            if kind is exact and kind is not float:
                if kind is str and not value.isascii() and _SURROGATE.search(value):
                    return "invalid_unicode", f"{out} holds an unpaired surrogate (not valid UTF-8)"
                continue
            if value is MISSING:
                if exported or spec.required:
                    return f"missing_field:{out}", f"{out} is absent"
                parent[key] = None
            elif value is None:
                if spec.required:
                    return f"missing_field:{out}", f"{out} is null"
            elif not _TYPE_OK[spec.type](value):
                if type(value) is float and value.is_integer() and abs(value) >= 2**63:
                    detail = (
                        f"{out} is a number beyond 64-bit integers ({value!r}: read as a float, "
                        f"digits may be lost), expected {spec.type}; store it as a string"
                    )
                else:
                    detail = f"{out} is {_kind(value)} {_short(value)}, expected {spec.type}"
                return f"wrong_type:{out}", detail
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def reject_problem(
    records: int, rejected: dict[str, int], max_fraction: float | None, where: str
) -> str | None:
    """Why a finished run failed its checks on rejects, or None.

    A run fails when it rejected every record, or more than ``max_fraction`` of them
    (``--max-reject-fraction``; None checks only "every record"). ``where`` names the rejects
    file or folder; the message gives the top reasons.
    """
    total = sum(rejected.values())
    if not records or not total:
        return None
    if total < records and (max_fraction is None or total <= max_fraction * records):
        return None
    top = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in top)
    if total >= records:
        head = f"every record was rejected ({total:,} of {records:,})"
    else:
        head = (
            f"{total:,} of {records:,} records were rejected ({100 * total / records:.1f}%, more "
            f"than --max-reject-fraction {max_fraction:g})"
        )
    return f"{head}; top reasons: {reasons}; see {where} (the output is kept for inspection)"
