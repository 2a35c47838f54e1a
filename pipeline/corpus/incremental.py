"""Incremental corpus exports (``--incremental``): each run adds the new input files as a
generation.

Layout of an incremental output (the default layout is unchanged; this one is chosen by the
first ``--incremental`` run and kept by the next ones)::

    OUT/train/gen-00000.jsonl  train/gen-00001.jsonl …   one file per split per generation
        (--parts: train/part-00000.jsonl …, numbered on across generations)
    OUT/rejects/part-00000.jsonl …                       numbered on across generations
    OUT/dataset_stats.json  README.md  card/…            recomputed over every generation
    OUT/_manifest.json                                   every file, plus ``incremental``:
        generations (inputs consumed, partitions, files) and the merged statistics

A generation's partitions are numbered after the previous generation's, so every part name
stays unique. Records of a split, read in manifest (path) order, are the records of a
from-scratch run over the same files read in generation order, then sorted file order within a
generation: the same order as a from-scratch run whenever new files sort after old ones (dated
names), and always the same set. Hash splits put every record where a from-scratch run does;
exact-count splits rank every record of every generation, so they are refused.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.errors import UserError
from pipeline.io.records import InputPartition
from pipeline.runtime import generations
from pipeline.runtime.generations import History
from pipeline.runtime.output import MANIFEST, PROGRESS, OutputDir, PartRecord, canonical_json

GENERATION_FILE = r"^[A-Za-z0-9_.-]+/gen-\d{5}\.(jsonl|parquet)(\.gz|\.zst)?$"


def kept_files(history: History) -> list[PartRecord]:
    """Data files of the earlier generations (split files and rejects), manifest order."""
    return [
        PartRecord(**f)
        for f in (history.manifest or {}).get("files", [])
        if (f.get("extra") or {}).get("split") or f["path"].startswith("rejects/")
    ]


def _read(output: OutputDir) -> bytes | None:
    output._forget_listings()
    try:
        return output.fs.cat_file(output.file(MANIFEST))
    except FileNotFoundError:
        return None


def plan_generation(
    spec: Any, output: OutputDir, params: dict[str, Any]
) -> tuple[History, list[InputPartition]]:
    """Compare the inputs with what the output consumed; plan the new files' partitions.

    Raises UserError (one line) when the output is not an incremental export with the same
    parameters, or an input changed or is gone (unless ``spec.rebuild``).
    """
    raw = _read(output)
    manifest = None
    if raw is not None and not spec.rebuild:
        manifest = _check_manifest(spec, json.loads(raw), params, output)
    elif not spec.rebuild:
        existing = output.listing()
        if existing and f"{PROGRESS}/params.json" not in existing:
            raise UserError(
                f"output {spec.out} already exists and is not an incremental dexport export; "
                + output.takeover_hint(existing, "--rebuild to replace it")
            )
    return generations.plan_next_generation(
        manifest,
        raw,
        lambda: _read(output),
        output.url,
        spec.inputs,
        spec.storage_options,
        spec.chunk_size,
        database=spec.database,
        rebuild=spec.rebuild,
    )


def _check_manifest(
    spec: Any, manifest: dict[str, Any], params: dict[str, Any], output: OutputDir
) -> dict:
    if manifest.get("job") != "corpus" or "incremental" not in manifest:
        raise UserError(
            f"output {spec.out} was not written with --incremental; "
            + output.takeover_hint(
                action="--rebuild to export every input again as an incremental output"
            )
        )
    before = manifest.get("parameters") or {}
    now = json.loads(canonical_json(params))
    if before != now:
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise UserError(
            f"output {spec.out} was exported with other options (differs: {', '.join(changed)}); "
            "repeat the original options or pass --rebuild"
        )
    return manifest
