"""Every command and API call writes the same bytes as before the package refactor.

Each case of ``cases.py`` runs against the session's 2-worker cluster (``dask_client``) and the
sha256 of every file it wrote must equal ``expected_sha256.json`` (made with the code of commit
fd2ddc9; see ``cases.py`` to regenerate it when an output change is intended).

To run it against another checkout (e.g. the reference, to see the expected file agrees with
it), start pytest from that checkout so its ``pipeline`` is imported first::

    cd /tmp/dexport-old && PYTHONPATH=/tmp/dexport-old /work/main/.venv/bin/python -m pytest \
        /work/main/tests/regression -q
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cases import (
    CASES,
    EXPECTED,
    FIXED_ROOT,
    diff_digests,
    digest_tree,
    fixed_root,
    make_inputs,
    run_case,
)

EXPECTED_DIGESTS: dict[str, dict[str, str]] = json.loads(EXPECTED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def regression_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fixed root (a link to a new temporary folder) with the inputs made under ``in/``."""
    with fixed_root(tmp_path_factory.mktemp("regression")) as root:
        make_inputs(root / "in")
        yield root


def test_expected_file_lists_every_case() -> None:
    assert sorted(EXPECTED_DIGESTS) == sorted(case.name for case in CASES), (
        f"{EXPECTED.name} and the cases disagree; regenerate it (see cases.py)"
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bytes_unchanged(case, regression_root: Path, dask_client) -> None:
    expected = EXPECTED_DIGESTS.get(case.name)
    if expected is None:
        pytest.fail(f"{case.name} has no entry in {EXPECTED.name}; regenerate it (see cases.py)")
    out = regression_root / "out" / case.name
    run_case(case, regression_root / "in", out, dask_client.scheduler.address)
    got = digest_tree(out)
    if got != expected:
        where = f"{FIXED_ROOT}/out/{case.name} -> {out.resolve()}"
        pytest.fail(
            f"{case.name}: the files written differ from {EXPECTED.name} ({where}):\n"
            + diff_digests(expected, got),
            pytrace=False,
        )
