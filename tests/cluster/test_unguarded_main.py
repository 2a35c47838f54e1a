"""The embedded cluster started from an unguarded ``__main__`` (cluster.local.main_script_hidden):
worker processes, restarted ones too, never run the user's script again."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

from cluster.local import main_script_hidden

MARKER = "module body running"
MODULE = f"""\
import os
import __main__
from cluster import get_client

print({MARKER!r}, flush=True)
with get_client(workers=1) as client:
    first = client.run(os.getpid)
    client.restart()  # the nanny spawns a new worker process: it must not run this module
    assert client.run(os.getpid) != first
    print("inside", getattr(__main__, "__file__", None), __main__.__spec__, flush=True)
print("after", __main__.__file__ == __file__, __main__.__spec__.name, flush=True)
"""


def test_worker_processes_do_not_rerun_a_module_run_with_dash_m(tmp_path: Path) -> None:
    # python -m: spawn would re-run the module by name (__spec__), a script by path (__file__).
    (tmp_path / "unguarded_job.py").write_text(MODULE)
    result = subprocess.run(
        [sys.executable, "-m", "unguarded_job"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(MARKER) == 1, result.stdout
    assert "inside None None" in result.stdout
    assert "after True unguarded_job" in result.stdout


def test_overlapping_uses_restore_main_when_the_last_one_closes(monkeypatch) -> None:
    spec = types.SimpleNamespace(name="user_job")
    main = types.ModuleType("__main__")
    main.__file__, main.__spec__ = "/home/user/user_job.py", spec
    monkeypatch.setitem(sys.modules, "__main__", main)

    first, second = main_script_hidden(), main_script_hidden()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # not last-in-first-out: a manager closed before a run
    assert not hasattr(main, "__file__") and main.__spec__ is None
    second.__exit__(None, None, None)
    assert main.__file__ == "/home/user/user_job.py" and main.__spec__ is spec
