"""``dexport validate``: re-check any export, record by record, and its manifest.

Corpus exports: every line of every split file must be a JSON object that passes the schema
check of :mod:`pipeline.formats.record_checks` (the schema recorded in the manifest, else the
default training schema). Token exports (JSONL, CSV, NPZ, Parquet): every record must have
the fields DESIGN documents (:mod:`pipeline.formats.token_checks`). The manifest must list
files that exist with the recorded size, sha256 and row count, and ``dataset_stats.json``
must agree with what was counted. The report gives, per split, the document count, the
errors (first few, then "and N more") and the average/min/max text length.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.errors import CorruptInput, exit_code_of
from pipeline.formats import token_checks as token_export_checks
from pipeline.formats.exports import Digest, Export, hash_file, iter_lines, open_export
from pipeline.formats.record_checks import validate_record
from pipeline.formats.schema import Schema


@dataclass
class SplitReport:
    """What validation found in one split (or one group of token files)."""

    name: str
    files: list[str]
    documents: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    length_sum: int = 0
    length_min: int | None = None
    length_max: int | None = None

    def error(self, message: str, keep: int) -> None:
        self.error_count += 1
        if len(self.errors) < keep:
            self.errors.append(message)

    def length(self, n: int) -> None:
        self.documents += 1
        self.length_sum += n
        self.length_min = n if self.length_min is None else min(self.length_min, n)
        self.length_max = n if self.length_max is None else max(self.length_max, n)

    def as_dict(self) -> dict[str, Any]:
        avg = round(self.length_sum / self.documents, 2) if self.documents else 0
        return {
            "name": self.name,
            "files": self.files,
            "documents": self.documents,
            "errors": self.error_count,
            "first_errors": self.errors,
            "avg_length": avg,
            "min_length": self.length_min or 0,
            "max_length": self.length_max or 0,
        }


@dataclass
class ValidationReport:
    """The whole result; ``passed`` is what the exit status follows."""

    url: str
    kind: str
    splits: list[SplitReport]
    problems: list[str] = field(default_factory=list)  # export-level (manifest, statistics)
    manifest: bool = False  # the export has dexport's _manifest.json

    @property
    def unreadable(self) -> bool:
        """Not one valid record, errors only, and no manifest: not an export at all."""
        errors = sum(s.error_count for s in self.splits)
        return not self.manifest and errors > 0 and not any(s.documents for s in self.splits)

    @property
    def passed(self) -> bool:
        return not self.problems and all(s.error_count == 0 for s in self.splits)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "passed": self.passed,
            "problems": self.problems,
            "splits": [s.as_dict() for s in self.splits],
        }


def validate_export(
    url: str, storage_options: dict | None = None, *, schema: Schema | None = None, show: int = 5
) -> ValidationReport:
    """Validate the export at ``url``; ``show`` errors per split are kept verbatim."""
    export = open_export(url, storage_options)
    report = ValidationReport(url, export.kind, [], list(export.notes))
    report.manifest = export.manifest is not None
    digests: dict[str, Digest] = {}
    if export.kind == "corpus":
        params = (export.manifest or {}).get("parameters") or {}
        schema = schema or (
            Schema.from_dict(params["schema"]) if params.get("schema") else Schema()
        )
    for name, files in export.groups.items():
        split = SplitReport(name, files)
        if not files:
            split.error(f"{name}: the manifest lists no file for this split", show)
        for rel in files:
            if not export.fs.exists(export.file(rel)):
                split.error(f"{rel}: the file is missing", show)
                continue
            digest = digests.setdefault(rel, Digest())
            try:
                if export.kind == "corpus":
                    _check_corpus_file(export, rel, schema, split, digest, show)
                else:
                    token_export_checks.check_file(export, rel, split, digest, show)
            except CorruptInput as exc:  # a truncated .gz/.zst part: this file fails
                split.error(f"{rel}: {exc}", show)
                digests.pop(rel, None)
            except (ValueError, EOFError, csv.Error, zipfile.BadZipFile) as exc:
                if exit_code_of(exc) is not None:  # a UserError: not about this file's bytes
                    raise
                # Bytes that are not the format the name says (pyarrow, csv, zip, decoding).
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                split.error(f"{rel}: unreadable as {rel.split('.', 1)[-1]} ({reason})", show)
                digests.pop(rel, None)
        report.splits.append(split)
    if export.manifest is not None:
        report.problems += _check_manifest(export, digests)
    if export.kind == "corpus" and not export.single_file:
        report.problems += _check_stats(export, report)
    return report


def _check_corpus_file(
    export: Export, rel: str, schema: Schema, split: SplitReport, digest: Digest, show: int
) -> None:
    path = export.file(rel)
    text_path = schema.text.split(".")
    if rel.endswith(".parquet"):
        records = _parquet_records(export.fs, path, digest)
    else:
        records = ((n, line) for n, line in iter_lines(export.fs, path, digest))
    for number, item in records:
        where = f"{rel}:{number}"
        if isinstance(item, bytes):
            if not item.strip():
                split.error(f"{where}: blank line", show)
                continue
            try:
                item = orjson.loads(item)
            except orjson.JSONDecodeError as exc:
                split.error(f"{where}: invalid JSON ({exc})", show)
                continue
        if not isinstance(item, dict):
            split.error(f"{where}: not a JSON object", show)
            continue
        problem = validate_record(schema, item, exported=True)
        if problem is not None:
            split.error(f"{where}: {problem[0]}: {problem[1]}", show)
            continue
        text: Any = item
        for p in text_path:
            text = text[p]
        split.length(len(text))


def _parquet_records(fs: Any, path: str, digest: Digest):
    import io

    import pyarrow.parquet as pq

    data = hash_file(fs, path, digest)
    number = 0
    for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _check_manifest(export: Export, digests: dict[str, Digest]) -> list[str]:
    problems = []
    for f in export.manifest.get("files", []):
        rel = f["path"]
        path = export.file(rel)
        if not export.fs.exists(path):
            problems.append(f"{rel}: listed in the manifest but missing")
            continue
        digest = digests.get(rel)
        if digest is None:
            digest = Digest()
            hash_file(export.fs, path, digest)
        if digest.bytes != f["bytes"]:
            problems.append(
                f"{rel}: size differs from the manifest ({digest.bytes} bytes, recorded "
                f"{f['bytes']}): the file changed after export"
            )
        elif digest.hexdigest != f["sha256"]:
            problems.append(
                f"{rel}: sha256 differs from the manifest (the file changed after export)"
            )
    return problems


def _check_stats(export: Export, report: ValidationReport) -> list[str]:
    path = export.file("dataset_stats.json")
    if not export.fs.exists(path):
        return ["dataset_stats.json is missing"] if export.manifest is not None else []
    stats = orjson.loads(export.fs.cat_file(path))
    problems = []
    for split in report.splits:
        want = ((stats.get("splits") or {}).get(split.name) or {}).get("count")
        counted = split.documents + split.error_count
        if want is not None and want != counted:
            problems.append(f"{split.name}: {counted} records, dataset_stats.json says {want}")
    return problems


def format_report(report: ValidationReport) -> str:
    """The human-readable report (the last line says PASSED or FAILED)."""
    lines = [f"Validating {report.url} ({report.kind} export)"]
    for s in report.splits:
        avg = s.length_sum / s.documents if s.documents else 0
        label = "text length" if report.kind == "corpus" else "content length"
        lines.append(
            f"  {s.name}: {s.documents:,} documents, {s.error_count:,} errors; {label} avg "
            f"{avg:,.1f}, min {s.length_min or 0:,}, max {s.length_max or 0:,}"
        )
        lines += [f"    - {e}" for e in s.errors]
        if s.error_count > len(s.errors):
            lines.append(f"    ... and {s.error_count - len(s.errors):,} more")
    lines += [f"  ! {p}" for p in report.problems]
    if report.passed:
        lines.append("ALL SPLITS PASSED VALIDATION")
    else:
        bad = sum(1 for s in report.splits if s.error_count)
        total = sum(s.error_count for s in report.splits)
        lines.append(
            f"VALIDATION FAILED: {total:,} record errors in {bad} split(s), {len(report.problems)} "
            "export problem(s)"
        )
    return "\n".join(lines)
