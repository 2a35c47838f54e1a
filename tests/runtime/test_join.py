"""A one-file export's parts joined in order while later ones run, and resumed by range."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.runtime.join import InOrderJoin
from pipeline.runtime.output import JOINED, PartRecord, RenderedPart

N = 4


def body(k: int) -> bytes:
    return f'{{"part": {k}}}\n'.encode() * (k * 1000 + 1)


def record(k: int) -> PartRecord:
    data = body(k)
    extra = {"records": k * 1000 + 1}
    return PartRecord(f"part-{k:05d}.jsonl", k * 1000 + 1, len(data), sha(data), extra)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rendered(k: int) -> RenderedPart:
    """Part ``k`` as a task of this process hands it over: its bytes in a few pieces."""
    data = body(k)
    return RenderedPart(record(k), [data[:7], memoryview(data)[7:]])


def staged(staging: Path, k: int) -> PartRecord:
    """Part ``k`` as a Dask worker leaves it: a file in the staging folder."""
    (staging / f"part-{k:05d}.jsonl").write_bytes(body(k))
    return record(k)


def joiner(tmp_path: Path, name: str = "out.jsonl") -> tuple[InOrderJoin, Path, Path]:
    staging, target = tmp_path / f"{name}.dexport-parts", tmp_path / name
    staging.mkdir(exist_ok=True)
    names = [f"part-{k:05d}.jsonl" for k in range(N)]
    return InOrderJoin(names, str(staging), str(target)), staging, target


WHOLE = b"".join(body(k) for k in range(N))


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]])
def test_parts_finishing_in_any_order_join_in_part_order(tmp_path: Path, order) -> None:
    join, staging, target = joiner(tmp_path)
    for k in order:
        part = rendered(k) if k % 2 else staged(staging, k)
        assert join.add(f"part-{k:05d}.jsonl", part) == record(k)
        assert not target.exists()  # nothing at the target before the whole file is there
    join.publish()
    assert target.read_bytes() == WHOLE
    # Staged part files went into the joined file as they were appended.
    assert not list(staging.glob("part-*"))
    assert not (staging / JOINED / "out.jsonl").exists()


def test_parts_waiting_beyond_the_memory_bound_wait_in_files(tmp_path: Path, monkeypatch) -> None:
    """Part 0 finishing last: the parts after it are held in memory up to a bound, then staged
    in files; the file is the same and no staged file is left."""
    from pipeline.runtime import join as join_module

    monkeypatch.setattr(join_module, "MAX_WAITING_IN_MEMORY", 1)
    join, staging, target = joiner(tmp_path)
    for k in (1, 2, 3):
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    assert sorted(p.name for p in staging.glob("part-*")) == [
        "part-00002.jsonl",
        "part-00003.jsonl",
    ]
    join.add("part-00000.jsonl", rendered(0))
    join.publish()
    assert target.read_bytes() == WHOLE and not list(staging.glob("part-*"))


def test_publish_refuses_a_file_with_a_part_missing(tmp_path: Path) -> None:
    join, _, target = joiner(tmp_path)
    for k in (0, 2, 3):
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    with pytest.raises(RuntimeError, match="parts missing"):
        join.publish()
    join.close()
    assert not target.exists()


def interrupted(tmp_path: Path, parts: int) -> Path:
    """A run that joined ``parts`` parts (and had part ``parts + 1`` waiting), then died."""
    join, _, target = joiner(tmp_path)
    for k in [*range(parts), parts + 1]:
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    join.close()
    return tmp_path / "out.jsonl.dexport-parts" / JOINED


def finish(tmp_path: Path, resumed: dict) -> bytes:
    join, _, target = joiner(tmp_path)
    assert join.resume() == resumed
    for k in range(N):
        name = f"part-{k:05d}.jsonl"
        join.add(name, resumed.get(name) or rendered(k))
    join.publish()
    return target.read_bytes()


def test_resume_reuses_the_joined_parts(tmp_path: Path) -> None:
    folder = interrupted(tmp_path, 2)
    assert (folder / "out.jsonl").read_bytes() == body(0) + body(1)
    assert finish(tmp_path, {r.path: r for r in (record(0), record(1))}) == WHOLE


def test_resume_cuts_the_file_after_the_last_intact_part(tmp_path: Path) -> None:
    folder = interrupted(tmp_path, 3)
    data = bytearray((folder / "out.jsonl").read_bytes())
    data[len(body(0)) + 5] ^= 1  # part 1 damaged: parts 1 and 2 are redone
    (folder / "out.jsonl").write_bytes(bytes(data) + b"half of the next part")
    join, _, _ = joiner(tmp_path)
    assert join.resume() == {"part-00000.jsonl": record(0)}
    assert (folder / "out.jsonl").read_bytes() == body(0)
    join.close()
    assert finish(tmp_path, {"part-00000.jsonl": record(0)}) == WHOLE


def test_resume_after_a_kill_mid_append_drops_the_unrecorded_tail(tmp_path: Path) -> None:
    folder = interrupted(tmp_path, 2)
    with open(folder / "out.jsonl", "ab") as data:  # killed while appending part 2 ...
        data.write(body(2)[:100])
    with open(folder / "out.jsonl.parts.jsonl", "ab") as journal:  # ... or while recording it
        journal.write(b'{"path": "part-00002.js')
    resumed = {r.path: r for r in (record(0), record(1))}
    assert finish(tmp_path, resumed) == WHOLE


def test_killed_after_the_rename_resume_only_tidies_up(tmp_path: Path) -> None:
    join, _, target = joiner(tmp_path)
    for k in range(N):
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    join.publish()
    written = target.stat().st_mtime_ns
    again, _, _ = joiner(tmp_path)
    assert again.resume() == {r.path: r for r in map(record, range(N))}
    again.publish()  # nothing to do
    assert target.read_bytes() == WHOLE and target.stat().st_mtime_ns == written


def test_a_target_that_changed_since_the_rename_is_exported_again(tmp_path: Path) -> None:
    join, _, target = joiner(tmp_path)
    for k in range(N):
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    join.publish()
    target.write_bytes(WHOLE[:-1] + b"!")
    assert finish(tmp_path, {}) == WHOLE


def test_a_target_named_like_a_journal_is_joined_and_resumed(tmp_path: Path) -> None:
    # the file and its journal never share a name, whatever the target is called
    join, _, target = joiner(tmp_path, "parts.jsonl")
    for k in (0, 1, 3):
        join.add(f"part-{k:05d}.jsonl", rendered(k))
    join.close()
    again, _, _ = joiner(tmp_path, "parts.jsonl")
    assert again.resume() == {r.path: r for r in (record(0), record(1))}
    again.add("part-00002.jsonl", rendered(2))
    again.add("part-00003.jsonl", rendered(3))
    again.publish()
    assert target.read_bytes() == WHOLE
