"""``dexport run JOB.yaml``: job files checked as a whole, steps run like the command line."""

from __future__ import annotations

import re
from pathlib import Path

import corpus_helpers
import pytest
from corpus_helpers import tree_bytes

from pipeline.cli import main


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("classified")
    corpus_helpers.sample.generate(str(out), docs=40, seed=1, mean_words=20)
    return out


def _job(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _written(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "job.yaml")


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("dexport: error: ")
    return err[0]


def test_corpus_then_validate_equals_the_commands_run_directly(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SRC", str(small_corpus))
    monkeypatch.delenv("OUT_ROOT", raising=False)
    job = _job(
        tmp_path,
        "steps:\n"
        '  - corpus: {inputs: ["${SRC}/*.jsonl"], out: "${OUT_ROOT:-' + str(tmp_path) + '}/job",'
        ' split: "0.9,0.05,0.05", seed: 7, set: [metadata.source=wiki, metadata.lang=en],'
        " exact_counts: false}\n"
        "  - validate: {inputs: [" + str(tmp_path / "job") + "]}\n",
    )
    assert main(["run", job]) == 0
    captured = capsys.readouterr()
    assert "dexport run: step 1/2 corpus" in captured.err
    assert "dexport run: step 2/2 validate" in captured.err
    assert "ALL SPLITS PASSED VALIDATION" in captured.out

    direct = tmp_path / "direct"
    args = ["--split", "0.9,0.05,0.05", "--seed", "7"]
    sets = ["--set", "metadata.source=wiki", "--set", "metadata.lang=en"]
    glob_arg = str(small_corpus / "*.jsonl")
    assert main(["corpus", glob_arg, "--out", str(direct), *args, *sets]) == 0
    assert main(["validate", str(direct)]) == 0
    job_files, direct_files = tree_bytes(tmp_path / "job"), tree_bytes(direct)
    assert job_files.keys() == direct_files.keys()
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "dataset_stats.json"):
        assert job_files[name] == direct_files[name], name
    train = (tmp_path / "job" / "train.jsonl").read_text()
    assert '"source": "wiki"' in train or '"source":"wiki"' in train


def test_dry_run_prints_commands_and_writes_nothing(
    small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("OUT_ROOT", str(tmp_path / "env out"))
    job = _job(
        tmp_path,
        "steps:\n"
        f"  - corpus: {{inputs: {small_corpus}, out: '${{OUT_ROOT}}/c', parts: true}}\n"
        "  - stats: {inputs: '${OUT_ROOT}/c'}\n",
    )
    assert main(["run", job, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"dexport corpus {small_corpus} --out '{tmp_path}/env out/c' --parts" in out
    assert f"writes: {tmp_path}/env out/c" in out
    assert "step 2/2 stats" in out
    assert _written(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [\n", "invalid YAML at line"),
        ("- corpus: {}\n", "a job file is a mapping"),
        ("steps: []\n", "key 'steps'"),
        ("stpes: []\n", "unknown key 'stpes'"),
        ("steps:\n  - corpuss: {inputs: [@SRC@], out: o}\n", "step 1: unknown step 'corpuss'"),
        (
            "steps:\n  - stats: {inputs: [@SRC@]}\n"
            "  - corpus: {inputs: [@SRC@], out: o, splitt: 1}\n",
            "step 2 (corpus): unknown option 'splitt' (did you mean 'split'?)",
        ),
        (
            "steps:\n  - corpus: {inputs: [@SRC@], out: o, seed: abc}\n",
            "step 1 (corpus): key 'seed': invalid int value: 'abc'",
        ),
        (
            "steps:\n  - corpus: {inputs: [@SRC@], out: o, format: xml}\n",
            "step 1 (corpus): key 'format': invalid choice",
        ),
        (
            "steps:\n  - corpus: {inputs: [@SRC@], out: o, parts: 3}\n",
            "step 1 (corpus): key 'parts' is a flag",
        ),
        (
            "steps:\n  - corpus: {inputs: [@SRC@], out: o}\n  - validate: {inputs: [nope/x]}\n",
            "step 2 (validate): key 'inputs': 'nope/x' not found",
        ),
        (
            "steps:\n  - corpus: {inputs: ['nope/*.jsonl'], out: o}\n",
            "step 1 (corpus): key 'inputs': 'nope/*.jsonl' matches no file",
        ),
        (
            "steps:\n  - corpus: {inputs: [@SRC@], out: '${DEXPORT_TEST_UNSET}/o'}\n",
            "step 1 (corpus): key 'out': environment variable DEXPORT_TEST_UNSET is not set",
        ),
    ],
)
def test_whole_file_is_checked_first(
    text: str, expected: str, small_corpus: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEXPORT_TEST_UNSET", raising=False)
    job = _job(tmp_path, text.replace("@SRC@", str(small_corpus)))
    assert main(["run", job]) == 2
    line = _one_error(capsys)
    assert f"{job}" in line
    assert expected in line, line
    assert _written(tmp_path) == []


def test_failing_step_stops_the_run_with_its_exit_code(
    small_corpus: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "not-an-export"
    bad.mkdir()
    (bad / "train.jsonl").write_text("not json\n")
    job = _job(
        tmp_path,
        f"steps:\n  - validate: {{inputs: [{bad}]}}\n"
        f"  - corpus: {{inputs: [{small_corpus}], out: {tmp_path / 'never'}}}\n",
    )
    code = main(["run", job])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert code == main(["validate", str(bad)])
    assert "step 2/2" not in "\n".join(err).replace("later steps not run", "")
    # One error line, the last: the step's own error, naming the step and what was skipped.
    errors = [line for line in err if line.startswith("dexport: error: ")]
    assert errors == [err[-1]], err
    assert errors[0].startswith("dexport: error: step 1/2 validate: ")
    assert "is not an export" in errors[0] and errors[0].endswith("; later steps not run")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (
            "tokens: {inputs: [data/ds], seq-len: 8, seed: 1, num-samples: 40, all: true,"
            " text: true, out: out/x.jsonl}",
            r"step 2 \(tokens\): --text needs --tokenizer PATH",
        ),
        (
            "corpus: {inputs: [SRC], out: out/c, rebuild: true}",
            r"step 2 \(corpus\): --rebuild goes with --incremental",
        ),
    ],
)
def test_rules_between_options_are_checked_before_the_first_step(
    small_corpus: Path, tmp_path: Path, capsys, step: str, match: str
) -> None:
    first = f"corpus: {{inputs: [{small_corpus}], out: {tmp_path / 'first'}}}"
    job = _job(tmp_path, f"steps:\n  - {first}\n  - {step.replace('SRC', str(small_corpus))}\n")
    assert main(["run", job]) == 2
    assert re.search(match, _one_error(capsys))
    assert _written(tmp_path) == []  # step 1 did not run
