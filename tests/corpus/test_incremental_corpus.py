"""Incremental corpus exports: a re-run adds only new input files, and the result equals a
from-scratch export (``--incremental``, ``incremental: true`` in a job file).

Inputs are small generated JSONL files with dated names (new files sort after old ones, the
case where the records' order equals a from-scratch run's too). "Only the new files are read"
is proven two ways: the run report counts the input lines read, and an old input whose bytes
are replaced by others of the same size, with its modification time put back, changes nothing
(a run that read it would export or reject its new bytes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from corpus_helpers import tree_bytes

from pipeline.cli import main

SPLITS = ("train", "validation", "test")


def write_day(folder: Path, day: int, docs: int = 60, bad: int = 0) -> Path:
    """``2026-01-{day}.jsonl``: ``docs`` records (texts unique across days), ``bad`` broken."""
    path = folder / f"2026-01-{day:02d}.jsonl"
    lines = [
        json.dumps(
            {
                "id": f"{day}-{i}",
                "text": f"day {day} document {i} " + "lorem ipsum " * (1 + (i * 7 + day) % 23),
                "domain": ("news", "science", "law")[i % 3],
                "quality_prob": ((i * 37 + day) % 100) / 100,
            }
        )
        for i in range(docs)
    ]
    lines += ["{not json"] * bad
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def split_records(out: Path, name: str) -> bytes:
    """The bytes of split ``name``, whatever the layout (one file, generations, parts)."""
    single = out / f"{name}.jsonl"
    if single.exists():
        return single.read_bytes()
    return b"".join(p.read_bytes() for p in sorted((out / name).glob("*.jsonl")))


def corpus(*args: str) -> int:
    return main(["corpus", *args])


def report_of(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def days(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_day(folder, 1, bad=1)
    write_day(folder, 2)
    return folder


def from_scratch(inputs: Path, out: Path, *extra: str) -> Path:
    assert corpus(str(inputs), "--out", str(out), "--chunk-size", "4k", *extra) == 0
    return out


def test_job_file_runs_adds_only_new_files_and_equals_a_from_scratch_run(
    days: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "export"
    job = tmp_path / "job.yaml"
    job.write_text(
        "steps:\n"
        f"  - corpus: {{inputs: ['{days}'], out: '{out}', incremental: true, chunk_size: 4k}}\n"
        f"  - validate: {{inputs: ['{out}']}}\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.json"
    assert main(["run", str(job), "--report", str(report)]) == 0
    first = report_of(report)
    assert [s["status"] for s in first["steps"]] == ["done", "done"]
    assert first["steps"][0]["records_in"] == 121 and first["steps"][0]["generation"] == 0
    before = tree_bytes(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()

    # The same job again: nothing to do, exit 0, not one byte (or time stamp) changed.
    assert main(["run", str(job), "--report", str(report)]) == 0
    assert "is up to date" in capsys.readouterr().err
    assert report_of(report)["steps"][0]["status"] == "up to date"
    assert tree_bytes(out) == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    # An old input's bytes replaced (same size, same mtime): a run that read it would see them.
    old = days / "2026-01-02.jsonl"
    stat = old.stat()
    old.write_bytes(b"x" * (stat.st_size - 1) + b"\n")
    os.utime(old, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    write_day(days, 3)
    write_day(days, 4, bad=2)
    assert main(["run", str(job), "--report", str(report)]) == 0
    step = report_of(report)["steps"][0]
    assert (step["status"], step["generation"], step["records_in"]) == ("done", 1, 122)
    assert step["records_out"] == 120 and step["rejected"] == 2
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "gen-00000.jsonl",
        "gen-00001.jsonl",
    ]

    # From scratch over the same four files as they were read.
    reference = tmp_path / "reference-in"
    reference.mkdir()
    for day in (1, 2, 3, 4):
        write_day(reference, day, bad={1: 1, 4: 2}.get(day, 0))
    full = from_scratch(reference, tmp_path / "full")
    for name in SPLITS:
        assert split_records(out, name) == split_records(full, name), name
    stats = json.loads((out / "dataset_stats.json").read_text())
    assert stats == json.loads((full / "dataset_stats.json").read_text())
    assert stats["total_documents"] == 240 and stats["total_rejected"] == 3
    rejects = b"".join(p.read_bytes() for p in sorted((out / "rejects").iterdir()))
    full_rejects = b"".join(p.read_bytes() for p in sorted((full / "rejects").iterdir()))
    assert rejects.replace(str(days).encode(), b"") == full_rejects.replace(
        str(reference).encode(), b""
    )

    manifest = json.loads((out / "_manifest.json").read_text())
    generations = manifest["incremental"]["generations"]
    assert [[i["path"].rsplit("/", 1)[-1] for i in g["inputs"]] for g in generations] == [
        ["2026-01-01.jsonl", "2026-01-02.jsonl"],
        ["2026-01-03.jsonl", "2026-01-04.jsonl"],
    ]
    assert all(
        set(i) == {"kind", "path", "size", "version", "sha256"}
        for g in generations
        for i in g["inputs"]
    )
    assert main(["validate", str(out)]) == 0

    import datasets

    loaded = datasets.load_dataset(str(out))
    for name in SPLITS:
        want = [json.loads(line) for line in split_records(full, name).splitlines()]
        assert [r["text"] for r in loaded[name]] == [r["text"] for r in want]


def test_parts_layout_numbers_parts_on_across_generations(days: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    args = ["--out", str(out), "--incremental", "--parts", "--chunk-size", "4k"]
    assert corpus(str(days), *args) == 0
    first = sorted(p.name for p in (out / "train").iterdir())
    write_day(days, 3)
    assert corpus(str(days), *args) == 0
    later = sorted(p.name for p in (out / "train").iterdir())
    assert later[: len(first)] == first and len(later) > len(first)
    full = from_scratch(days, tmp_path / "full", "--parts")
    for name in SPLITS:
        assert split_records(out, name) == split_records(full, name)
    assert main(["validate", str(out)]) == 0


def test_changed_or_gone_input_is_refused_with_one_line_until_rebuild(
    days: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "export"
    args = [str(days), "--out", str(out), "--incremental", "--chunk-size", "4k"]
    assert corpus(*args) == 0
    before = tree_bytes(out)
    capsys.readouterr()

    (days / "2026-01-02.jsonl").open("a").write('{"text": "one more"}\n')
    assert corpus(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2026-01-02.jsonl" in err[0] and "--rebuild" in err[0], err
    assert "changed" in err[0]

    (days / "2026-01-01.jsonl").unlink()
    assert corpus(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone" in err[0] and "2026-01-01.jsonl" in err[0], err
    assert tree_bytes(out) == before

    # A file only touched (same bytes) is not a change.
    os.utime(days / "2026-01-02.jsonl", ns=(1, 1))
    assert corpus(*args, "--rebuild") == 0
    os.utime(days / "2026-01-02.jsonl", ns=(2, 2))
    assert corpus(*args) == 0
    assert "is up to date" in capsys.readouterr().err

    full = from_scratch(days, tmp_path / "full")
    for name in SPLITS:
        assert split_records(out, name) == split_records(full, name)


def test_incremental_mistakes_end_with_one_line_and_exit_2(
    days: Path, tmp_path: Path, capsys
) -> None:
    plain = from_scratch(days, tmp_path / "plain")
    before = tree_bytes(plain)
    capsys.readouterr()
    cases = [
        ([str(days), "--out", str(plain), "--incremental"], "not written with --incremental"),
        (
            [str(days), "--out", str(tmp_path / "x"), "--incremental", "--exact-counts"],
            "--exact-counts",
        ),
        ([str(days), "--out", str(tmp_path / "x"), "--rebuild"], "--rebuild goes with"),
    ]
    for args, words in cases:
        assert corpus(*args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dexport: error: ") and words in err[0], err
    assert tree_bytes(plain) == before
    assert not (tmp_path / "x").exists()

    out = tmp_path / "inc"
    assert corpus(str(days), "--out", str(out), "--incremental") == 0
    capsys.readouterr()
    assert corpus(str(days), "--out", str(out), "--incremental", "--split", "0.8,0.2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs: split" in err[0], err


def test_python_api_incremental(days: Path, tmp_path: Path) -> None:
    from pipeline import export_corpus

    out = tmp_path / "api"
    first = export_corpus([str(days)], str(out), incremental=True, chunk_size=4096)
    assert first["generation"] == 0 and first["documents"] == 120
    again = export_corpus([str(days)], str(out), incremental=True)
    assert again["up_to_date"] and again["documents"] == 120
    write_day(days, 3)
    third = export_corpus([str(days)], str(out), incremental=True)
    assert third["generation"] == 1 and third["added"]["documents"] == 60
    assert third["documents"] == 180
