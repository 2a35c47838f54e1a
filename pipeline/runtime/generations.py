"""Incremental runs: what an output has consumed, and what is new, changed or gone.

An incremental output (``--incremental``) records in its manifest every input it consumed, as a
list of *input identities*: a mapping with a ``kind`` and what identifies that input's content.
Files (the only kind so far) are ``{"kind": "file", "path": URL, "size": bytes, "version":
"mtime:<ns>" | "etag:<ETag>", "sha256": hex}``; another source (a database table) can record
its own kind, e.g. a key watermark, in the same list. A re-run compares the files its inputs
name now with that list:

- a file not consumed before is **new**: it is read (and checksummed) by this run alone and
  becomes part of the next *generation*;
- a consumed file with the same size and version is **unchanged** and not read at all;
- a consumed file whose size differs, or whose version differs and whose sha256 (read again)
  differs too, is **changed** (a file only touched is unchanged);
- a consumed file that the inputs no longer name is **gone**.

Changed and gone inputs are refused by the jobs unless ``--rebuild``: appending cannot take
records back out of an output.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import TemporaryFailure, UserError
from pipeline.io.storage import is_local
from pipeline.runtime.output import canonical_json

HASH_BUFFER = 8 << 20
HASH_THREADS = 8


def file_version(fs: Any, path: str) -> tuple[int, str]:
    """``(size, version)`` of a file without reading it: local mtime (ns) or the S3 ETag."""
    if is_local(fs):
        import os

        st = os.stat(path)
        return st.st_size, f"mtime:{st.st_mtime_ns}"
    info = fs.info(path)
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if etag:
        return int(info["size"]), f"etag:{etag}"
    mtime = info.get("LastModified") or info.get("mtime")
    return int(info["size"]), f"mtime:{mtime}"


def file_sha256(fs: Any, path: str) -> str:
    """sha256 of a file's bytes (one sequential read)."""
    digest = hashlib.sha256()
    with fs.open(path, "rb", **({} if is_local(fs) else {"block_size": HASH_BUFFER})) as handle:
        while block := handle.read(HASH_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def identify(files: list[tuple[Any, str, str]]) -> list[dict[str, Any]]:
    """Identities of ``(fs, path, url)`` files, checksums computed on a few threads."""

    def one(item: tuple[Any, str, str]) -> dict[str, Any]:
        fs, path, url = item
        size, version = file_version(fs, path)
        return {
            "kind": "file",
            "path": url,
            "size": size,
            "version": version,
            "sha256": file_sha256(fs, path),
        }

    if len(files) <= 1:
        return [one(f) for f in files]
    with ThreadPoolExecutor(min(HASH_THREADS, len(files))) as pool:
        return list(pool.map(one, files))


@dataclass
class InputChanges:
    """The files the inputs name now, compared with the consumed identities."""

    new: list[tuple[Any, str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unchanged: int = 0

    def refuse(self, out: str) -> None:
        """One UserError line for changed or gone inputs (nothing can be appended then)."""
        if not (self.changed or self.gone):
            return
        what = []
        if self.changed:
            what.append(f"changed since it was exported: {_names(self.changed)}")
        if self.gone:
            what.append(f"gone from the inputs: {_names(self.gone)}")
        raise UserError(
            f"{out} cannot be extended: input {'; input '.join(what)}; restore the input, or pass "
            "--rebuild to export every input again"
        )


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:3])
    return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def compare(files: list[tuple[Any, str, str]], consumed: list[dict[str, Any]]) -> InputChanges:
    """Sort the files the inputs name now into new / changed / unchanged, and find gone ones.

    Only identities of kind ``file`` are compared; a consumed file is read again only when its
    size is the same but its version is not (a touched file keeps its place if its bytes do).
    """
    known = {c["path"]: c for c in consumed if c.get("kind") == "file"}
    changes = InputChanges()
    seen = set()
    for fs, path, url in files:
        before = known.get(url)
        if before is None:
            changes.new.append((fs, path, url))
            continue
        seen.add(url)
        size, version = file_version(fs, path)
        if size != before["size"]:
            changes.changed.append(url)
        elif version != before["version"] and file_sha256(fs, path) != before["sha256"]:
            changes.changed.append(url)
        else:
            changes.unchanged += 1
    changes.gone = sorted(set(known) - seen)
    return changes


def consumed_inputs(manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every input identity the generations of an incremental manifest consumed, in order."""
    generations = ((manifest or {}).get("incremental") or {}).get("generations") or []
    return [item for g in generations for item in g.get("inputs", [])]


def generation_count(manifest: dict[str, Any] | None) -> int:
    """How many generations an incremental manifest holds (0 for none)."""
    return len(((manifest or {}).get("incremental") or {}).get("generations") or [])


def next_partition(manifest: dict[str, Any] | None) -> int:
    """The first partition (task, part, shard) number of the next generation."""
    generations = ((manifest or {}).get("incremental") or {}).get("generations") or []
    return max((g["partitions"][1] for g in generations), default=0)


@dataclass
class History:
    """What an incremental run extends: the current manifest and this run's new generation."""

    manifest: dict[str, Any] | None  # None: the first generation
    manifest_bytes: bytes | None
    generation: int
    first_partition: int
    inputs: list[dict[str, Any]] = field(default_factory=list)  # identities of the new files
    unchanged: int = 0  # inputs consumed by earlier generations
    read_manifest: Any = None  # () -> the manifest's bytes now (None: none)
    url: str = ""  # the output, for messages

    @property
    def up_to_date(self) -> bool:
        """No new input: nothing to do."""
        return not self.inputs

    @property
    def state(self) -> dict[str, Any] | None:
        """Merged statistics of the earlier generations (None for the first)."""
        return ((self.manifest or {}).get("incremental") or {}).get("state")

    def kept_paths(self) -> set[str]:
        """Every file the current manifest lists."""
        return {f["path"] for f in (self.manifest or {}).get("files", [])}

    def progress_params(self, params: dict[str, Any], partitions: list[Any]) -> dict[str, Any]:
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

    def describe(self, job: str) -> str:
        """One line for ``-v``: what this run found."""
        new = [i.get("path", "?").rsplit("/", 1)[-1] for i in self.inputs]
        shown = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
        return (
            f"dexport {job}: {self.url}: generation {self.generation}, {self.unchanged} inputs "
            f"already consumed, {len(new)} new{': ' + shown if new else ''}"
        )

    def guard(self) -> None:
        """Run once the lock is held: raise when the manifest is no longer the one planned on
        (another run added a generation between this run's planning and its lock)."""
        if self.read_manifest() != self.manifest_bytes:
            raise TemporaryFailure(
                f"output {self.url} got a new generation from another run while this one was "
                "starting; run again (it will only add what is still new)"
            )

    def record(self, partitions: list[Any], files: list[str]) -> dict[str, Any]:
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


def plan_next_generation(
    manifest: dict[str, Any] | None,
    manifest_bytes: bytes | None,
    read_manifest: Any,
    out: str,
    inputs: list[str],
    storage_options: dict[str, Any],
    target_bytes: int,
    *,
    database: Any = None,
    rebuild: bool = False,
) -> tuple[History, list[Any]]:
    """The next generation of an incremental output: its :class:`History` and the partitions
    to read (numbered after the earlier generations'): new files, or a database's rows above
    the largest key consumed (``database``: a :class:`pipeline.io.sql.SqlSource`).

    Changed or gone files are refused with one line (:meth:`InputChanges.refuse`); so is a
    database whose rows up to the watermark are no longer the ones consumed (rows inserted
    below it or deleted), unless ``rebuild``.
    """
    import dataclasses

    from pipeline.io.records import list_input_files, plan_partitions

    first = next_partition(manifest)
    consumed = consumed_inputs(manifest)
    if database is not None:
        identities, unchanged, planned = _new_rows(database, target_bytes, consumed, out, rebuild)
    else:
        files = list_input_files(inputs, storage_options)
        changes = compare(files, consumed)
        if not rebuild:
            changes.refuse(out)
        identities, unchanged = identify(changes.new), changes.unchanged
        urls = [url for _, _, url in changes.new]
        planned = plan_partitions(urls, storage_options, target_bytes) if urls else []
    history = History(
        manifest,
        manifest_bytes,
        generation_count(manifest),
        first,
        identities,
        unchanged,
        read_manifest,
        out,
    )
    return history, [dataclasses.replace(p, index=first + i) for i, p in enumerate(planned)]


def _new_rows(
    database: Any, target_bytes: int, consumed: list[dict[str, Any]], out: str, rebuild: bool
) -> tuple[list[dict[str, Any]], int, list[Any]]:
    """(identities, inputs consumed before, partitions) of the rows above the watermark."""
    import dataclasses

    from pipeline.io.sql import count_rows_up_to, plan_key_ranges

    before = [c for c in consumed if c.get("kind") == "database"]
    rows_before = sum(c["rows"] for c in before)
    after = before[-1]["last_key"] if before else None
    if after is not None and not rebuild:
        now = count_rows_up_to(database, after)
        if now != rows_before:
            raise UserError(
                f"{out} cannot be extended: {database.label} holds {now:,} rows with "
                f"{database.key} <= {after!r} but {rows_before:,} were exported (rows were added "
                f"below the largest key exported, or deleted); pass --rebuild to export every "
                "row again"
            )
    ranges = plan_key_ranges(
        dataclasses.replace(database, after=after), target_bytes, first_row=rows_before
    )
    if not ranges.partitions:
        return [], len(before), []
    if not isinstance(ranges.max_key, int | float | str):
        raise UserError(
            f"--incremental with {database.label} needs a number or text --key to remember the "
            f"largest key exported (--key {database.key} holds {type(ranges.max_key).__name__} "
            "values); use an integer id column"
        )
    identity = {
        "kind": "database",
        "path": database.label,
        "first_key": ranges.min_key,
        "last_key": ranges.max_key,
        "rows": ranges.rows,
    }
    return [identity], len(before), ranges.partitions
