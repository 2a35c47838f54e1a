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

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError
from pipeline.io.records import InputPartition, list_input_files, plan_partitions
from pipeline.runtime import generations
from pipeline.runtime.output import MANIFEST, PROGRESS, OutputDir, PartRecord, canonical_json

GENERATION_FILE = r"^[A-Za-z0-9_.-]+/gen-\d{5}\.(jsonl|parquet)(\.gz|\.zst)?$"


@dataclass
class History:
    """What an incremental run extends: the current manifest and this run's new generation."""

    manifest: dict[str, Any] | None  # None: the first generation
    manifest_bytes: bytes | None
    generation: int
    first_partition: int
    inputs: list[dict[str, Any]] = field(default_factory=list)  # identities of the new files
    unchanged: int = 0  # inputs consumed by earlier generations

    @property
    def up_to_date(self) -> bool:
        """No new input: nothing to do."""
        return not self.inputs

    @property
    def state(self) -> dict[str, Any] | None:
        """Merged statistics of the earlier generations (None for the first)."""
        return ((self.manifest or {}).get("incremental") or {}).get("state")

    def kept_files(self) -> list[PartRecord]:
        """Data files of the earlier generations (split files and rejects), manifest order."""
        return [
            PartRecord(**f)
            for f in (self.manifest or {}).get("files", [])
            if (f.get("extra") or {}).get("split") or f["path"].startswith("rejects/")
        ]

    def kept_paths(self) -> set[str]:
        """Every file the current manifest lists."""
        return {f["path"] for f in (self.manifest or {}).get("files", [])}

    def progress_params(self, params: dict[str, Any], partitions: list[InputPartition]) -> dict:
        """Parameters of this generation's run (an interrupted one resumes only if they match)."""
        digest = hashlib.sha256()
        for item in self.inputs:
            digest.update(canonical_json(item))
        return {
            **params,
            "generation": self.generation,
            "new_inputs": digest.hexdigest(),
            "partitions": [self.first_partition, self.first_partition + len(partitions)],
        }

    def guard(self, output: OutputDir) -> Any:
        """A check for after the lock is taken: the manifest is still the one planned on."""

        def check() -> None:
            from pipeline.errors import TemporaryFailure

            if _read(output) != self.manifest_bytes:
                raise TemporaryFailure(
                    f"output {output.url} got a new generation from another run while this one "
                    "was starting; run again (it will only add what is still new)"
                )

        return check

    def record(self, partitions: list[InputPartition], files: list[str]) -> dict[str, Any]:
        """This generation's entry in the manifest."""
        return {
            "generation": self.generation,
            "partitions": [self.first_partition, self.first_partition + len(partitions)],
            "inputs": self.inputs,
            "files": sorted(files),
        }

    def generations(self) -> list[dict[str, Any]]:
        """The earlier generations' entries."""
        return list(((self.manifest or {}).get("incremental") or {}).get("generations") or [])


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
        manifest = _check_manifest(spec, json.loads(raw), params)
    elif not spec.rebuild:
        existing = output.listing()
        if existing and f"{PROGRESS}/params.json" not in existing:
            raise UserError(
                f"output {spec.out} already exists and is not an incremental dexport export; "
                "pass --rebuild to replace it or pick another --out"
            )
    files = list_input_files(spec.inputs, spec.storage_options)
    changes = generations.compare(files, generations.consumed_inputs(manifest))
    changes.refuse(spec.out)
    history = History(
        manifest,
        raw,
        generations.generation_count(manifest),
        generations.next_partition(manifest),
        generations.identify(changes.new),
        changes.unchanged,
    )
    if history.up_to_date:
        return history, []
    planned = plan_partitions(
        [url for _, _, url in changes.new], spec.storage_options, spec.chunk_size
    )
    first = history.first_partition
    return history, [dataclasses.replace(p, index=first + i) for i, p in enumerate(planned)]


def _check_manifest(spec: Any, manifest: dict[str, Any], params: dict[str, Any]) -> dict:
    if manifest.get("job") != "corpus" or "incremental" not in manifest:
        raise UserError(
            f"output {spec.out} was not written with --incremental; pass --rebuild to export "
            "every input again as an incremental output, or pick another --out"
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
