"""Mapping curated records to the training schema: rename, nest, drop, static values, types.

A schema file (YAML or JSON) names the output fields, each by its dotted output path::

    text: text                        # output field that holds the document text
    fields:
      text: text                      # output path: input field (dotted for nested input)
      metadata.title: title
      metadata.quality_score: {from: quality_prob, type: float}
      metadata.word_count: {from: word_count, type: int, required: true}
    static:                           # the same value in every record
      metadata.source: wikipedia
    unmapped: drop                    # or "metadata": copy input fields no rule reads
    drop: [raw_html]                  # input fields never copied by "unmapped: metadata"
    stats: {domain: metadata.domain, quality: metadata.quality_score}

Types are ``string``, ``int``, ``float``, ``bool`` and ``any``. Mapping coerces what converts
without loss (``"0.87"`` → 0.87, ``782.0`` → 782, ``12`` → ``"12"``); a value that does not
convert is kept as it is, and validation rejects the record with ``wrong_type:<field>``. An
absent input field maps to :data:`MISSING` until validation turns it into ``null`` (or rejects
the record when the field is ``required``). Output keys keep the declared order, so the bytes
of a record depend only on the input and the schema.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.errors import UserError

TYPES = ("string", "int", "float", "bool", "any")
SCHEMA_KEYS = {"text", "fields", "static", "unmapped", "drop", "stats"}
FIELD_KEYS = {"from", "type", "required"}


class _Missing:
    """Marker for an input field that is absent (distinct from an explicit null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"  # unpickles as this module's singleton: identity checks keep working


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FieldSpec:
    """One output field: where its value comes from and what type it must have."""

    out: str  # dotted output path
    source: str | None  # dotted input path; None for a static value
    type: str = "any"
    required: bool = False
    value: Any = None  # the static value


DEFAULT_FIELDS = (
    FieldSpec("text", "text", "string", True),
    FieldSpec("metadata.title", "title", "string"),
    FieldSpec("metadata.source_url", "url", "string"),
    FieldSpec("metadata.domain", "domain", "string"),
    FieldSpec("metadata.quality_score", "quality_prob", "float"),
    FieldSpec("metadata.word_count", "word_count", "int"),
)


@dataclass(frozen=True)
class Schema:
    """A compiled mapping from input records to output records."""

    fields: tuple[FieldSpec, ...] = DEFAULT_FIELDS
    text: str = "text"
    unmapped: str = "drop"
    drop: tuple[str, ...] = ()
    domain_field: str | None = "metadata.domain"
    quality_field: str | None = "metadata.quality_score"

    def __post_init__(self) -> None:
        problems = _check(self)
        if problems:
            raise UserError("schema: " + "; ".join(problems))
        object.__setattr__(self, "_build", _compile(self))
        used = {f.source.split(".")[0] for f in self.fields if f.source}
        object.__setattr__(self, "_consumed", used | set(self.drop))

    def __reduce__(self) -> tuple:
        # Ship the description, not the compiled closures; the receiver compiles its own.
        return (
            Schema,
            (
                self.fields,
                self.text,
                self.unmapped,
                self.drop,
                self.domain_field,
                self.quality_field,
            ),
        )

    # -- mapping ---------------------------------------------------------------------------
    def map_record(self, record: dict) -> dict:
        """The output record for one input record (types coerced where lossless)."""
        out = self._build(record)  # type: ignore[attr-defined]
        if self.unmapped == "metadata":
            extra = [(k, v) for k, v in record.items() if k not in self._consumed]  # type: ignore[attr-defined]
            if extra:
                meta = out.setdefault("metadata", {})
                if isinstance(meta, dict):
                    for k, v in extra:
                        meta.setdefault(k, v)
        return out

    def with_static(self, assignments: list[str]) -> Schema:
        """This schema plus ``--set PATH=VALUE`` static string values (they override rules)."""
        fields = list(self.fields)
        problems = []
        for item in assignments:
            path, sep, value = item.partition("=")
            path = path.strip()
            if not sep or not path:
                problems.append(
                    f"--set {item!r} is not PATH=VALUE (e.g. metadata.source=wikipedia)"
                )
                continue
            fields = [f for f in fields if f.out != path]
            fields.append(FieldSpec(path, None, "string", False, value))
        if problems:
            raise UserError("; ".join(problems))
        return Schema(
            tuple(fields),
            self.text,
            self.unmapped,
            self.drop,
            self.domain_field,
            self.quality_field,
        )

    def as_dict(self) -> dict[str, Any]:
        """A plain description (recorded in the manifest; ``from_dict`` restores it)."""
        return {
            "text": self.text,
            "fields": [asdict(f) for f in self.fields],
            "unmapped": self.unmapped,
            "drop": list(self.drop),
            "stats": {"domain": self.domain_field, "quality": self.quality_field},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        """Inverse of :meth:`as_dict`."""
        stats = data.get("stats") or {}
        return cls(
            tuple(FieldSpec(**f) for f in data["fields"]),
            data.get("text", "text"),
            data.get("unmapped", "drop"),
            tuple(data.get("drop", ())),
            stats.get("domain"),
            stats.get("quality"),
        )

    def arrow_schema(self) -> Any:
        """The Parquet/Arrow schema of output records (nested paths become structs)."""
        import pyarrow as pa

        kinds = {
            "string": pa.string(),
            "int": pa.int64(),
            "float": pa.float64(),
            "bool": pa.bool_(),
            "any": pa.string(),
        }
        tree: dict[str, Any] = {}
        for f in self.fields:
            node = tree
            *parents, leaf = f.out.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = kinds[f.type]

        def build(node: dict[str, Any]) -> list[Any]:
            return [
                pa.field(k, pa.struct(build(v)) if isinstance(v, dict) else v)
                for k, v in node.items()
            ]

        return pa.schema(build(tree))


def _path(source: str | None) -> tuple[str, ...] | None:
    return None if source is None else tuple(source.split("."))


def get_path(record: dict, path: tuple[str, ...]) -> Any:
    """The value at a path of keys, or MISSING."""
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def _compile(schema: Schema) -> Any:
    """A function building an output record: one closure per field, nested dicts in order.

    Mapping runs once per record, so the schema is turned into closures once instead of
    walking paths for every record.
    """
    tree: dict[str, Any] = {}
    for f in schema.fields:
        node = tree
        *parents, leaf = f.out.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _leaf(f, None if f.out == schema.text else _COERCE[f.type])

    def node_fn(node: dict[str, Any]) -> Any:
        items = [(k, node_fn(v) if isinstance(v, dict) else v) for k, v in node.items()]
        return lambda rec: {k: fn(rec) for k, fn in items}

    return node_fn(tree)


def _leaf(spec: FieldSpec, coerce: Any) -> Any:
    if spec.source is None:
        value = spec.value
        return lambda rec: value
    path = _path(spec.source)
    if len(path) == 1:
        key = path[0]
        if coerce is None:
            return lambda rec: rec.get(key, MISSING)

        def top(rec: dict) -> Any:
            v = rec.get(key, MISSING)
            return v if v is MISSING or v is None else coerce(v)

        return top

    def nested(rec: dict) -> Any:
        v = get_path(rec, path)
        return v if coerce is None or v is MISSING or v is None else coerce(v)

    return nested


# -- coercion (lossless only; anything else is left for validation to reject) -------------
# JSON integers the reader keeps exact and the writer can write (orjson: 64 bits); a larger
# integer literal is read as a float, so an integral float beyond this range may have lost
# digits: it is never converted (validation rejects it with its type).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _to_string(v: Any) -> Any:
    if type(v) is str:
        return v
    if isinstance(v, float) and v.is_integer() and not INT_MIN <= v <= INT_MAX:
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return v


def _to_int(v: Any) -> Any:
    if type(v) is int:
        return v
    if isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer() and INT_MIN <= v <= INT_MAX:
        return int(v)
    if isinstance(v, str):
        try:
            n = int(v.strip())
        except ValueError:
            return v
        return n if INT_MIN <= n <= INT_MAX else v
    return v


def _to_float(v: Any) -> Any:
    if type(v) is float:
        return v
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return float(v) if float(v) == v else v  # beyond 2**53 only when exact
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return v
        return f if math.isfinite(f) else v
    return v


def _to_bool(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    if type(v) is int and v in (0, 1):
        return bool(v)
    return v


_COERCE = {"string": _to_string, "int": _to_int, "float": _to_float, "bool": _to_bool, "any": None}


def _check(schema: Schema) -> list[str]:
    problems = []
    outs = [f.out for f in schema.fields]
    if len(set(outs)) != len(outs):
        problems.append(
            "output fields named twice: "
            f"{', '.join(sorted({o for o in outs if outs.count(o) > 1}))}"
        )
    for a in outs:
        if any(not seg for seg in a.split(".")):
            problems.append(f"output path {a!r} has an empty segment")
        for b in outs:
            if b.startswith(a + "."):
                problems.append(f"output {a!r} is both a value and the parent of {b!r}")
    for f in schema.fields:
        if f.type not in TYPES:
            problems.append(f"field {f.out!r} has unknown type {f.type!r} (use {', '.join(TYPES)})")
    text = [f for f in schema.fields if f.out == schema.text]
    if not text:
        problems.append(
            f"no rule for the text field {schema.text!r}; add 'fields: {{{schema.text}: <input "
            f"field>}}'"
        )
    elif text[0].source is None or text[0].type not in ("string", "any"):
        problems.append(f"the text field {schema.text!r} must come from an input field as a string")
    if schema.unmapped not in ("drop", "metadata"):
        problems.append(f"unmapped must be 'drop' or 'metadata' (got {schema.unmapped!r})")
    return problems


def load_schema(
    path: str | None, storage_options: dict | None = None, assignments: list[str] | None = None
) -> Schema:
    """The schema from a YAML/JSON file (default: the training schema), plus ``--set`` values."""
    schema = Schema() if path is None else parse_schema(_read_text(path, storage_options), path)
    return schema.with_static(assignments) if assignments else schema


def _read_text(path: str, storage_options: dict | None) -> str:
    from pipeline.io.storage import resolve

    fs, p = resolve(path, storage_options)
    if not fs.isfile(p):
        what = "is a folder" if fs.isdir(p) else "does not exist"
        raise UserError(f"schema file {path!r} {what}; pass a YAML or JSON schema file")
    try:
        return fs.cat_file(p).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"schema file {path!r} is not UTF-8 text (byte {exc.start}); pass a YAML or JSON "
            "schema file"
        ) from None


def parse_schema(text: str, where: str = "schema") -> Schema:
    """Parse the text of a schema file (YAML, of which JSON is a subset).

    Every problem of the file is reported in one UserError: a file that is not a mapping,
    unknown keys, values of the wrong kind (``fields`` must map output paths to an input field
    or ``{from, type, required}``), output paths with empty segments or ``/``.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML/JSON ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to be a schema") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {_yaml_kind(data)}"
        raise UserError(
            f"{where} is {kind}, not a mapping with 'fields' (see docs/corpus.md, Schema)"
        )
    problems = [f"unknown key {k!r}" for k in data if k not in SCHEMA_KEYS]
    text_field = data.get("text", "text")
    if not isinstance(text_field, str) or not text_field:
        problems.append(f"'text' must name the output text field (got {_yaml_kind(text_field)})")
        text_field = "text"
    fields: list[FieldSpec] = []
    for out, rule in _mapping(data, "fields", problems).items():
        out = str(out)
        problems += _path_problems(out)
        if isinstance(rule, str) and rule:
            fields.append(FieldSpec(out, rule, "string" if out == text_field else "any"))
        elif isinstance(rule, dict) and isinstance(rule.get("from"), str) and rule["from"]:
            problems.extend(
                f"field {out!r}: unknown key {k!r}" for k in rule if k not in FIELD_KEYS
            )
            kind, required = rule.get("type", "any"), rule.get("required", False)
            if not isinstance(kind, str):
                problems.append(f"field {out!r}: type must be one of {', '.join(TYPES)}")
                kind = "any"
            if not isinstance(required, bool):
                problems.append(f"field {out!r}: required must be true or false")
            fields.append(FieldSpec(out, rule["from"], kind, bool(required)))
        else:
            problems.append(f"field {out!r} needs an input field name or {{from: NAME, type: T}}")
    for out, value in _mapping(data, "static", problems).items():
        problems += _path_problems(str(out))
        if isinstance(value, datetime.date):  # YAML reads 2024-01-15 as a date: keep the text
            value = value.isoformat()
        fields.append(FieldSpec(str(out), None, _type_of(value), False, value))
    stats = _mapping(data, "stats", problems)
    problems += [f"stats: unknown key {k!r} (use domain, quality)" for k in stats if k not in STATS]
    for k in STATS:
        if stats.get(k) is not None and not isinstance(stats.get(k), str):
            problems.append(f"stats: {k} must name an output field")
    drop = data.get("drop") or []
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
        problems.append("drop must be a list of input field names")
        drop = []
    unmapped = data.get("unmapped", "drop")
    if not isinstance(unmapped, str):
        problems.append("unmapped must be 'drop' or 'metadata'")
        unmapped = "drop"
    if problems:
        raise UserError(f"{where}: " + "; ".join(problems))
    return Schema(
        tuple(fields),
        text_field,
        unmapped,
        tuple(drop),
        stats.get("domain", "metadata.domain"),
        stats.get("quality", "metadata.quality_score"),
    )


STATS = ("domain", "quality")


def _mapping(data: dict, key: str, problems: list[str]) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{key!r} must be a mapping (got {_yaml_kind(value)})")
        return {}
    return value


def _path_problems(out: str) -> list[str]:
    if any(ch in out for ch in "/\\\x00"):
        return [f"output path {out!r} holds '/', '\\' or NUL; name fields with dotted paths"]
    return []


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "any"
