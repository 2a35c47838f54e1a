"""Finalize a corpus export: split files, ``dataset_stats.json``, dataset card, manifest (last).

Runs on the driver after every partition is written. Order matters for crash safety: split
files are published (atomically) first, then the statistics and the card, then the part files
that were joined are removed, and ``_manifest.json`` goes last. A crash anywhere before the
manifest leaves an incomplete directory that ``--resume`` finishes (re-running only the
partitions whose parts are gone).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from typing import Any

from pipeline.corpus import card as dataset_card
from pipeline.corpus.histogram import histogram_svg
from pipeline.corpus.incremental import kept_files
from pipeline.formats.corpus_stats import SplitStats, dataset_stats
from pipeline.io.assemble import concatenate, copy_local, join_parquet
from pipeline.io.storage import atomic_open, is_local, write_bytes_atomic
from pipeline.runtime.output import MANIFEST, OutputDir, PartRecord, tool_version

HASH_BUFFER = 8 << 20


def finalize(
    spec: Any,
    output: OutputDir,
    task: Any,
    params: dict[str, Any],
    results: list[list[PartRecord]],
    t0: float,
    executor: Any = None,
    history: Any = None,
    partitions: list[Any] = (),
) -> dict[str, Any]:
    """Publish everything that follows from the part records; returns the run summary.

    With an ``executor``, the histograms are drawn by its (otherwise idle) workers while this
    process joins the split files. With a ``history`` (incremental runs) the parts become a new
    generation: the statistics continue from the earlier generations' and the card and
    manifest list every generation's files (see :mod:`pipeline.corpus.incremental`).
    """
    names = spec.split.names
    state = history.state if history is not None else None
    stats_by_split, rejected, accounting = merge_results(names, results, state)
    pictures = _draw_histograms(stats_by_split, executor) if spec.card else {}
    data_files: dict[str, Any] = {}
    files: list[PartRecord] = [] if history is None else kept_files(history)
    added: list[PartRecord] = []
    if spec.parts:
        for records in results:
            added += [
                PartRecord(r.path, r.rows, r.bytes, r.sha256, {"split": r.extra["split"]})
                for r in records[:-1]
            ]
        data_files = {name: f"{name}/part-*{task.ext}" for name in names}
    else:
        for i, name in enumerate(names):
            target = (
                f"{name}{task.ext}"
                if history is None
                else f"{name}/gen-{history.generation:05d}{task.ext}"
            )
            added.append(
                _assemble(output, spec.format, [records[i] for records in results], target, name)
            )
            data_files[name] = target
    files += added
    if history is not None and not spec.parts:  # every generation's file, in order
        data_files = {
            name: [f.path for f in files if (f.extra or {}).get("split") == name] for name in names
        }
    for records in results:
        rejects = records[-1]
        if rejects.rows:
            files.append(
                PartRecord(rejects.path, rejects.rows, rejects.bytes, rejects.sha256, None)
            )
        elif output.fs.exists(output.file(rejects.path)):
            output.fs.rm(output.file(rejects.path))
    if not any(f.path.startswith("rejects/") for f in files) and output.fs.isdir(
        output.file("rejects")
    ):
        output.fs.rm(output.file("rejects"), recursive=True)  # an empty folder locally
    extra = {
        "split": spec.split.as_dict(),
        "format": spec.format,
        "compression": spec.compression,
        "tokenizer": params["tokenizer"],
        "tool": f"dexport {tool_version()}",
    }
    stats = dataset_stats(stats_by_split, rejected, accounting, extra)
    extras = [
        _publish(
            output,
            "dataset_stats.json",
            (json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode(),
        )
    ]
    example = (state or {}).get("example") or _example_json(results)
    if spec.card:
        extras += _publish_card(
            output, spec, stats, pictures, data_files, json.loads(example) if example else None
        )
    if not spec.parts and history is None:
        for name in names:
            if output.fs.exists(output.file(name)):
                output.fs.rm(output.file(name), recursive=True)
    elif not spec.parts:  # the split folders hold earlier generations: remove the parts only
        for records in results:
            for r in records[:-1]:
                output.fs.rm(output.file(r.path))
    totals = {
        "documents": stats["total_documents"],
        "rejected": stats["total_rejected"],
        "splits": {n: s.count for n, s in stats_by_split.items()},
        **{k: accounting[k] for k in ("input_lines", "blank_lines")},
    }
    incremental = None
    if history is not None:
        new = [f.path for f in added] + [r[-1].path for r in results if r[-1].rows]
        incremental = {
            "generations": [*history.generations(), history.record(list(partitions), new)],
            "state": {
                "stats": {n: s.to_json() for n, s in stats_by_split.items()},
                "rejected": dict(sorted(rejected.items())),
                "input_lines": accounting["input_lines"],
                "blank_lines": accounting["blank_lines"],
                "example": example,
            },
        }
    output.finalize(params, "corpus", files, totals, extras, incremental)
    summary = _summary(output, stats, files + extras, t0)
    if history is not None:
        _, new_rejected, new_accounting = merge_results(names, results)
        summary["generation"] = history.generation
        summary["added"] = {
            "inputs": len(history.inputs),
            "input_lines": new_accounting["input_lines"],
            "documents": new_accounting["exported"],
            "rejected": new_accounting["rejected"],
        }
    return summary


def _assemble(
    output: OutputDir, fmt: str, parts: list[PartRecord], target: str, split: str
) -> PartRecord:
    """One file per split from its parts, in partition order, with its size and sha256."""
    fs = output.fs
    sources = [output.file(r.path) for r in parts]
    path = output.file(target)
    rows = sum(r.rows for r in parts)
    if fmt == "jsonl" and is_local(fs):
        size, sha = _concatenate_local(fs, sources, path)
        return PartRecord(target, rows, size, sha, {"split": split})
    if fmt == "parquet" and not rows:
        # join_parquet writes nothing without a row group; an empty split is still a valid file.
        concatenate(fs, sources[:1], path)
    elif fmt == "parquet":
        join_parquet(fs, sources, path)
    else:
        concatenate(fs, sources, path)
    digest = hashlib.sha256()
    size = 0
    # The joined file's hash cannot be derived from the parts' hashes: read it once (on S3 a
    # server-side join plus one download is still cheaper than streaming through here).
    with fs.open(path, "rb", **({} if is_local(fs) else {"block_size": HASH_BUFFER})) as handle:
        while chunk := handle.read(HASH_BUFFER):
            digest.update(chunk)
            size += len(chunk)
    return PartRecord(target, rows, size, digest.hexdigest(), {"split": split})


def _concatenate_local(fs: Any, sources: list[str], target: str) -> tuple[int, str]:
    """Join local parts with in-kernel copies (``copy_file_range``), hashing the parts.

    Copying through Python buffers costs an order of magnitude more on large splits than
    letting the kernel copy; the hash needs one read of the (page-cached) parts.
    """
    digest = hashlib.sha256()
    size = 0
    with atomic_open(fs, target, "wb") as out:
        out.flush()
        for src in sources:
            with open(src, "rb") as handle:
                n = os.fstat(handle.fileno()).st_size
                copy_local(handle, out)
                handle.seek(0)
                while chunk := handle.read(HASH_BUFFER):
                    digest.update(chunk)
                size += n
    return size, digest.hexdigest()


def _publish(output: OutputDir, relative: str, data: bytes) -> PartRecord:
    write_bytes_atomic(output.fs, output.file(relative), data)
    return PartRecord(relative, 0, len(data), hashlib.sha256(data).hexdigest(), None)


def _draw_histograms(by_split: dict[str, SplitStats], executor: Any) -> dict[str, Any]:
    """SVG bytes per split, or futures of them when an executor can draw them elsewhere."""
    jobs = {name: (s.lengths, f"{name}: {s.count:,} documents") for name, s in by_split.items()}
    if executor is None:
        return {name: histogram_svg(*args) for name, args in jobs.items()}
    return {
        name: executor.submit(
            histogram_svg,
            *args,
            key=f"dexport-histogram-{name}-{uuid.uuid4().hex[:8]}",
        )
        for name, args in jobs.items()
    }


def _publish_card(
    output: OutputDir,
    spec: Any,
    stats: dict,
    pictures: dict[str, Any],
    data_files: dict[str, str],
    example: dict | None,
) -> list[PartRecord]:
    out = []
    for name, svg in pictures.items():
        svg = svg if isinstance(svg, bytes) else svg.result()
        out.append(_publish(output, dataset_card.image_path(name), svg))
    pretty = output.url.rstrip("/").rsplit("/", 1)[-1] or "corpus"
    text = dataset_card.render_card(
        stats, data_files, pretty_name=pretty, example=example, command=spec.command
    )
    out.append(_publish(output, "README.md", text.encode()))
    return out


def _example_json(results: list[list[PartRecord]]) -> str | None:
    """The first exported record (shortened by the task, as JSON), to show the record format."""
    for records in results:
        for r in records[:-1]:
            if r.extra.get("example") is not None:
                return r.extra["example"]
    return None


def _summary(
    output: OutputDir, stats: dict[str, Any], files: list[PartRecord], t0: float
) -> dict[str, Any]:
    seconds = time.perf_counter() - t0
    return {
        "out": output.url,
        "documents": stats["total_documents"],
        "splits": {n: s["count"] for n, s in stats["splits"].items()},
        "rejected": stats["total_rejected"],
        "rejected_by_reason": stats["rejected"],
        "accounting": stats["accounting"],
        "files": len(files),
        "bytes": sum(f.bytes for f in files),
        "seconds": round(seconds, 3),
        "docs_per_s": round(stats["total_documents"] / seconds) if seconds else 0,
    }


def up_to_date_summary(output: OutputDir, history: Any, t0: float) -> dict[str, Any]:
    """Summary of an incremental export none of whose inputs is new (nothing was written)."""
    summary = existing_summary(output, t0)
    del summary["already_complete"]
    return {
        **summary,
        "up_to_date": True,
        "generation": history.generation - 1,
        "added": {"inputs": 0, "input_lines": 0, "documents": 0, "rejected": 0},
        "inputs": history.unchanged,
    }


def existing_summary(output: OutputDir, t0: float) -> dict[str, Any]:
    """Summary of an export that is already complete (``--resume`` of a finished run)."""
    manifest = json.loads(output.fs.cat_file(output.file(MANIFEST)))
    stats = json.loads(output.fs.cat_file(output.file("dataset_stats.json")))
    files = [PartRecord(**f) for f in manifest["files"]]
    return {**_summary(output, stats, files, t0), "already_complete": True}


def merge_results(
    names: tuple[str, ...], results: list[list[PartRecord]], state: dict[str, Any] | None = None
) -> tuple[dict[str, SplitStats], Counter, dict[str, int]]:
    """Statistics per split, rejects by reason and line accounting, merged in partition order.

    ``state`` (incremental runs) holds the merged figures of the earlier generations: merging
    goes on from them in the same order as a from-scratch run (the float sums too, bit for bit).
    """
    state = state or {}
    stats = {
        name: SplitStats.from_json(state["stats"][name]) if state else SplitStats()
        for name in names
    }
    rejected: Counter = Counter(state.get("rejected") or {})
    lines, blank = state.get("input_lines", 0), state.get("blank_lines", 0)
    for records in results:
        *split_parts, rejects = records
        for r in split_parts:
            stats[r.extra["split"]].merge(SplitStats.from_json(json.loads(r.extra["stats"])))
        rejected.update(rejects.extra["rejected"])
        lines += rejects.extra["lines"]
        blank += rejects.extra["blank_lines"]
    exported = sum(s.count for s in stats.values())
    accounting = {
        "input_lines": lines,
        "blank_lines": blank,
        "exported": exported,
        "rejected": sum(rejected.values()),
    }
    accounting["balanced"] = lines == blank + exported + accounting["rejected"]
    return stats, rejected, accounting
