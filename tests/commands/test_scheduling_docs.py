"""docs/scheduling.md: its job file runs as documented (three nights: first export, nothing
new, one new day), and its cron line, Kubernetes CronJob and Airflow task say what the exit
codes mean."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from tokenizers_fixtures import byte_bpe_tokenizer_path  # noqa: F401  (session fixture)

from pipeline.cli import main
from pipeline.formats.indexed_dataset import IndexedDataset

DOC = Path(__file__).resolve().parents[2] / "docs" / "scheduling.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [
        body for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == language
    ]


def write_day(folder: Path, day: int, docs: int = 50) -> None:
    rows = [
        {"text": f"night {day} story {i} " + "plain words " * (1 + (i + day) % 11), "domain": "web"}
        for i in range(docs)
    ]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / f"2026-03-{day:02d}.jsonl").write_text(lines, encoding="utf-8")


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_documented_job_file_runs_three_nights(
    tmp_path: Path,
    monkeypatch,
    byte_bpe_tokenizer_path: Path,  # noqa: F811
) -> None:
    (job_text,) = [b for b in blocks("yaml") if b.lstrip().startswith("# nightly.yaml")]
    job = tmp_path / "nightly.yaml"
    job.write_text(job_text, encoding="utf-8")
    data = tmp_path / "data"
    (data / "classified").mkdir(parents=True)
    write_day(data / "classified", 1)
    write_day(data / "classified", 2)
    monkeypatch.setenv("DATA", str(data))
    monkeypatch.setenv("TOKENIZER", str(byte_bpe_tokenizer_path))
    report = tmp_path / "report.json"

    def night() -> list[str]:
        assert main(["run", str(job), "--report", str(report)]) == 0
        got = json.loads(report.read_text())
        assert got["exit_code"] == 0 and [s["command"] for s in got["steps"]] == [
            "corpus",
            "validate",
            "encode",
        ]
        return [s["status"] for s in got["steps"]]

    assert night() == ["done", "done", "done"]
    before = tree(data)
    assert night() == ["up to date", "done", "up to date"]
    assert tree(data) == before

    write_day(data / "classified", 3)
    assert night() == ["done", "done", "done"]
    train = json.loads((data / "export" / "dataset_stats.json").read_text())["splits"]["train"]
    tokens = IndexedDataset(str(data / "tokens" / "train"))
    assert len(tokens) == train["count"]
    # The grown dataset equals a from-scratch encode of the export's train files.
    scratch = tmp_path / "scratch" / "train"
    args = ["--tokenizer", str(byte_bpe_tokenizer_path), "--append-eod", "--out", str(scratch)]
    assert main(["encode", str(data / "export" / "train"), *args]) == 0
    for suffix in (".bin", ".idx"):
        got = (data / "tokens" / f"train{suffix}").read_bytes()
        assert got == scratch.with_name(f"train{suffix}").read_bytes()


def test_the_cronjob_retries_on_3_and_fails_fast_on_1_and_2() -> None:
    (text,) = [b for b in blocks("yaml") if "kind: CronJob" in b]
    cron = yaml.safe_load(text)
    spec = cron["spec"]["jobTemplate"]["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    by_code = {
        code: rule["action"]
        for rule in rules
        if "onExitCodes" in rule
        for code in rule["onExitCodes"]["values"]
    }
    assert by_code == {1: "FailJob", 2: "FailJob", 3: "Count", 130: "Count"}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = spec["template"]["spec"]["containers"]
    assert all(r["onExitCodes"]["containerName"] == container["name"] for r in rules[:2])
    assert container["command"][:2] == ["dexport", "run"]
    assert re.fullmatch(r"(\S+ ){4}\S+", cron["spec"]["schedule"])


def test_the_cron_line_and_airflow_task() -> None:
    (cron,) = blocks("cron")
    (line,) = [x for x in cron.splitlines() if x.strip() and not x.startswith("#")]
    fields = line.split()
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    at = next(i for i, f in enumerate(fields) if f.endswith("/dexport"))
    assert fields[at + 1] == "run" and "--report" in fields
    (airflow,) = blocks("python")
    tree_ = ast.parse(airflow)
    retry = next(
        n for n in ast.walk(tree_) if isinstance(n, ast.Assign) and n.targets[0].id == "RETRY"
    )
    assert ast.literal_eval(retry.value) == {3, 130, 143}
    assert "AirflowFailException" in airflow


@pytest.mark.parametrize("code", [0, 1, 2, 3, 130, 143])
def test_every_exit_code_is_in_the_documented_table(code: int) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert re.search(rf"^\| {code} \| ", text, re.M)
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^\| {code} \| ", readme, re.M)
