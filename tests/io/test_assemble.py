"""Joining part files into one local file while a run still writes later parts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.io.assemble import InOrderJoin


def parts(tmp_path: Path, n: int) -> list[tuple[str, str, bytes]]:
    out = []
    for k in range(n):
        body = f"part {k}\n".encode() * (k * 1000 + 1)
        path = tmp_path / f"part-{k:05d}.jsonl"
        path.write_bytes(body)
        out.append((path.name, str(path), body))
    return out


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]])
def test_parts_finishing_in_any_order_join_in_part_order(tmp_path: Path, order) -> None:
    staging = tmp_path / "out.jsonl.dexport-parts"
    staging.mkdir()
    made = parts(staging, 4)
    target = tmp_path / "out.jsonl"
    join = InOrderJoin([name for name, _, _ in made], str(staging), str(target))
    for k in order:
        join.add(made[k][0], made[k][1])
        assert not target.exists()  # nothing at the target before the whole file is there
    join.publish()
    assert target.read_bytes() == b"".join(body for _, _, body in made)
    assert temporaries(staging) == []


def test_publish_refuses_a_file_with_a_part_missing(tmp_path: Path) -> None:
    made = parts(tmp_path, 3)
    join = InOrderJoin([name for name, _, _ in made], str(tmp_path), str(tmp_path / "x.jsonl"))
    join.add(made[0][0], made[0][1])
    join.add(made[2][0], made[2][1])
    with pytest.raises(RuntimeError, match="parts missing"):
        join.publish()
    join.discard()
    assert not (tmp_path / "x.jsonl").exists() and temporaries(tmp_path) == []


def test_discard_leaves_the_target_untouched(tmp_path: Path) -> None:
    made = parts(tmp_path, 2)
    target = tmp_path / "x.jsonl"
    target.write_bytes(b"the user's file\n")
    join = InOrderJoin([name for name, _, _ in made], str(tmp_path), str(target))
    join.add(made[0][0], made[0][1])
    assert len(temporaries(tmp_path)) == 1  # the partial file grows in the staging folder
    join.discard()
    assert target.read_bytes() == b"the user's file\n" and temporaries(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == sorted([*(n for n, _, _ in made), "x.jsonl"])
