"""One run per output, on local disk and S3 (SeaweedFS honours ``If-None-Match``/``If-Match``),
and the output protocol of incremental runs (:meth:`OutputDir.prepare_generation`)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from test_output_protocol import Where, _dead_pid, _lock_body, _write, local, where  # noqa: F401

from pipeline.errors import TemporaryFailure, UserError
from pipeline.runtime import lock as lock_module
from pipeline.runtime import log
from pipeline.runtime.output import LOCK, MANIFEST, PROGRESS, OutputDir

PARAMS = {"job": "test"}


def _race(where: Where, rounds: int = 5) -> list[int]:  # noqa: F811
    """Start two runs' locks at the same instant ``rounds`` times; winners per round."""
    winners = []
    for _ in range(rounds):
        outs = [where.out(), where.out()]
        start = threading.Barrier(2)
        won: list[OutputDir] = []

        def take(out: OutputDir, start: threading.Barrier = start, won: list = won) -> None:
            start.wait()
            try:
                out.lock.acquire()
                won.append(out)
            except TemporaryFailure:
                pass

        threads = [threading.Thread(target=take, args=(o,)) for o in outs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners.append(len(won))
        for out in won:
            out.lock.release()
    return winners


def test_of_two_runs_starting_together_exactly_one_takes_the_lock(where: Where) -> None:  # noqa: F811
    assert _race(where) == [1] * 5


def test_of_two_runs_taking_over_a_stale_lock_exactly_one_wins(where: Where) -> None:  # noqa: F811
    for _ in range(3):
        where.put(LOCK, _lock_body(pid=_dead_pid()))
        assert _race(where, rounds=1) == [1]


def test_lock_records_host_process_and_start_time(where: Where) -> None:  # noqa: F811
    out = where.out()
    out.lock.acquire()
    try:
        held = json.loads(where.tree()[LOCK])
        assert held["host"] == socket.gethostname() and held["pid"] > 0
        assert held["started"] <= held["heartbeat"] <= time.time()
    finally:
        out.lock.release()


def test_taking_over_a_dead_runs_lock_says_so(where: Where, capsys) -> None:  # noqa: F811
    log.configure()
    dead = _dead_pid()
    where.put(LOCK, _lock_body(pid=dead))
    out = where.out()
    out.prepare({"job": "test"})
    out.lock.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dexport: warning: took over the lock"), err
    assert f"pid {dead}" in err[0]


def test_a_run_refused_after_taking_over_a_lock_says_only_why(where: Where, capsys) -> None:  # noqa: F811
    log.configure()
    where.put("part-00000.jsonl", b"x")
    where.put(f"{PROGRESS}/params.json", b"{}")
    where.put(LOCK, _lock_body(pid=_dead_pid()))
    with pytest.raises(UserError, match="holds an interrupted export; pass --resume to finish it"):
        where.out().prepare({"job": "test"})
    assert capsys.readouterr().err == ""  # the refusal is the one line the user sees


def test_heartbeat_keeps_a_conditional_lock_fresh(where: Where, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setattr(lock_module, "LOCK_HEARTBEAT_S", 0.2)
    out = where.out()
    out.lock.acquire()
    try:
        first = json.loads(where.tree()[LOCK])["heartbeat"]
        time.sleep(1.0)
        later = json.loads(where.tree()[LOCK])
        assert later["heartbeat"] > first and later["run"] == out.lock.token
    finally:
        out.lock.release()
    assert LOCK not in where.tree()


# -- incremental generations ---------------------------------------------------------------
def _finished_generation(where: Where) -> OutputDir:  # noqa: F811
    out = where.out()
    out.prepare_generation(PARAMS, kept=set())
    part = _write(out, "part-00000.jsonl", b"a\n")
    out.finalize(PARAMS, "test", [part], {}, incremental={"generations": [{"generation": 0}]})
    return out


def test_a_user_error_in_a_later_generation_keeps_every_earlier_file(where: Where) -> None:  # noqa: F811
    _finished_generation(where)
    before = where.tree()
    out = where.out()
    out.prepare_generation({**PARAMS, "generation": 1}, kept={"part-00000.jsonl"})
    _write(out, "part-00001.jsonl", b"b\n")
    from pipeline.errors import UserError

    out.abandon(UserError("bad input"))
    assert {k: v for k, v in where.tree().items() if v is not None} == {
        k: v for k, v in before.items() if v is not None
    }


def test_an_interrupted_generation_resumes_or_is_cleared(where: Where) -> None:  # noqa: F811
    _finished_generation(where)
    kept = {"part-00000.jsonl"}
    out = where.out()
    gen1 = {**PARAMS, "generation": 1, "new_inputs": "x"}
    out.prepare_generation(gen1, kept=kept)
    _write(out, "part-00001.jsonl", b"b\n")
    out.abandon(KeyboardInterrupt())  # interrupted: the part stays for the next run
    again = where.out()
    assert set(again.prepare_generation(gen1, kept=kept)) == {"part-00001.jsonl"}
    again.abandon(KeyboardInterrupt())
    # More inputs arrived meanwhile: other parameters, the interrupted parts go.
    other = where.out()
    assert other.prepare_generation({**gen1, "new_inputs": "y"}, kept=kept) == {}
    tree = where.tree()
    assert "part-00001.jsonl" not in tree and "part-00000.jsonl" in tree and MANIFEST in tree
    assert json.loads(tree[f"{PROGRESS}/params.json"])["new_inputs"] == "y"
    other.abandon(KeyboardInterrupt())


def test_guard_refuses_when_the_output_changed_before_the_lock(where: Where) -> None:  # noqa: F811
    def changed() -> None:
        raise TemporaryFailure("output got a new generation from another run")

    out = where.out()
    with pytest.raises(TemporaryFailure, match="new generation"):
        out.prepare_generation(PARAMS, kept=set(), guard=changed)
    assert LOCK not in where.tree()
