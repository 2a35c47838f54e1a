#!/usr/bin/env bash
# Creates .venv with the pinned dependencies (requirements/test.lock) and dexport installed
# in editable mode. Idempotent: does nothing when the lock file has not changed since last time.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP="$VENV/.lock-sha256"
want=$(cat requirements/test.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  # dexport's own bytecode, refreshed for files changed since (see --compile-bytecode below).
  "$VENV/bin/python" -m compileall -q pipeline gpu cluster >/dev/null
  exit 0
fi
echo "dexport: setting up $VENV (pinned dependencies from requirements/test.lock)" >&2
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check uv==0.13.8
# --compile-bytecode: uv does not write .pyc files by default, and with PYTHONDONTWRITEBYTECODE
# set (as on these machines) every run would compile its imports from source again (~1 s).
# torch is pinned to the CPU build (2.13.0+cpu); on these machines its wheel lies in /opt/wheels.
# uv does not read pip's configuration, so the folder is named here.
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" "${FIND_LINKS[@]}" --compile-bytecode -r requirements/test.lock
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
"$VENV/bin/python" -m compileall -q pipeline gpu cluster >/dev/null
echo "$want" > "$STAMP"
