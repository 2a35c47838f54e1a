"""Incremental encode runs (``--incremental``): new input files appended as a new generation.

Documents of new files are tokenized into shards numbered after the earlier generations' and
appended after the documents already in the dataset: old document ids never change. For
``--format megatron`` the grown ``PREFIX.bin`` (the old one followed by the new shards) and
``PREFIX.idx`` (the old sequence lengths followed by the new ones) are written under temporary
names and renamed over the old ones; ``PREFIX.rejects.jsonl`` likewise. The result equals a
from-scratch encode of the same files read in generation order (the same order as a
from-scratch run when new files sort after old ones, as dated names do). For ``--format npz``
the new shards are added beside the old ones. ``PREFIX.manifest.json`` (npz:
``_manifest.json``) records every generation's inputs (see :mod:`pipeline.runtime.generations`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pipeline.errors import UserError
from pipeline.runtime import generations
from pipeline.runtime.generations import History
from pipeline.runtime.output import canonical_json


def read_manifest(target: Any) -> bytes | None:
    """The bytes of the output's manifest now (None: none)."""
    path = (
        target.finals[".manifest.json"]
        if target.megatron
        else target.staging.file("_manifest.json")
    )
    target.staging._forget_listings()
    try:
        return target.fs.cat_file(path)
    except FileNotFoundError:
        return None


def plan_generation(job: Any, target: Any, params: dict[str, Any]) -> tuple[History, list[Any]]:
    """Compare the inputs with what the dataset consumed; plan the new files' partitions.

    Raises UserError (one line) when the output is not an incremental encode with the same
    parameters, or an input changed or is gone (unless ``job.rebuild``).
    """
    raw = read_manifest(target)
    manifest = None
    if raw is not None and not job.rebuild:
        manifest = json.loads(raw)
        if manifest.get("job") != "encode" or "incremental" not in manifest:
            action = "--rebuild to encode every input again as an incremental dataset"
            hint = (
                f"pass {action}, or pick another --out"
                if target.megatron
                else target.staging.takeover_hint(action=action)
            )
            raise UserError(f"{job.out} was not written with --incremental; {hint}")
        before, now = manifest.get("parameters") or {}, json.loads(canonical_json(params))
        if before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise UserError(
                f"{job.out} was encoded with other options (differs: {', '.join(changed)}); "
                "repeat the original options or pass --rebuild"
            )
    elif raw is None:
        existing, staged = target._state()
        # Files of a dataset prefix without dexport's manifest are the user's: even --rebuild
        # leaves them alone. A folder (npz) is sorted file by file: --rebuild replaces dexport's.
        if existing and not staged and (target.megatron or not job.rebuild):
            names = ", ".join(p.rsplit("/", 1)[-1] for p in existing)
            hint = (
                f"{names} was not written by dexport encode (no {target.name}.manifest.json); "
                "pick another --out prefix or remove those files yourself"
                if target.megatron
                else target.staging.takeover_hint(action="--rebuild to replace it")
            )
            raise UserError(
                f"output {job.out} already exists and is not an incremental dexport encode; {hint}"
            )
    return generations.plan_next_generation(
        manifest,
        raw,
        lambda: read_manifest(target),
        job.out,
        list(job.inputs),
        job.storage_options,
        job.partition_bytes,
        database=job.database,
        rebuild=job.rebuild,
    )


def merge_totals(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
    """Totals over every generation (counts add up; the tokenizer and dtype are the same)."""
    if not before:
        return now
    rejected = Counter(before["rejected"])
    rejected.update(now["rejected"])
    return {
        **now,
        **{k: before[k] + now[k] for k in ("records", "documents", "tokens", "shards")},
        "rejected": dict(sorted(rejected.items())),
    }
