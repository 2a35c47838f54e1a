#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, install the `gpu` extra into its own
# environment (.venv-gpu, pinned by requirements/gpu.lock), run the tests marked `gpu` and the
# CPU-against-GPU benchmark (scripts/bench_gpu.py), in under 10 minutes.
#
#   bash scripts/gpu_check.sh             # on the GPU machine; the table goes to stdout and
#                                         # to .venv-gpu/gpu_check_report.md
#   bash scripts/gpu_check.sh --dry-run   # anywhere: check what can be checked without a
#                                         # device, print the plan; installs and downloads nothing
#
# The dry run checks this script's syntax, that requirements/gpu.lock pins every package of
# the `gpu` extra and of the core dependencies at versions pyproject.toml allows and agrees
# with requirements/test.lock on every package both pin (and that test.lock holds no CUDA
# package), that pytest collects the `gpu` tests, and that the benchmark imports and accepts
# its commands. It runs with $PYTHON (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "gpu_check.sh: unknown argument '$1'; use --dry-run or nothing" >&2; exit 2 ;;
esac

VENV=.venv-gpu
REPORT="$VENV/gpu_check_report.md"
TEST_TOOLS=(pytest hypothesis array-api-strict psutil)  # pinned by requirements/test.lock
# The test files that hold `gpu`-marked tests (pytest selects the marked ones with -m gpu).
mapfile -t GPU_TESTS < <(grep -rlE "pytest\.mark\.gpu|marks=pytest\.mark\.gpu" tests --include='test_*.py' | sort)

plan() {
  echo "gpu_check plan:"
  echo "  1. $VENV: python3 -m venv, uv, then requirements/gpu.lock + ${TEST_TOOLS[*]} (pins from requirements/test.lock), dexport editable"
  echo "  2. nvidia-smi: name the device"
  echo "  3. pytest -m gpu ${GPU_TESTS[*]}"
  echo "  4. scripts/bench_gpu.py (tokens --text 20k windows, corpus ~300 MB; cpu vs gpu) -> $REPORT"
}

check_lock() {
  "$1" - <<'EOF'
"""requirements/gpu.lock covers pyproject's gpu extra and core dependencies; test.lock agrees."""
import re
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def pins(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line)
        if m:
            out[canonicalize_name(m.group(1).split("[")[0])] = m.group(2)
    return out


project = tomllib.load(open("pyproject.toml", "rb"))["project"]
gpu, test = pins("requirements/gpu.lock"), pins("requirements/test.lock")
wanted = [Requirement(r) for r in project["optional-dependencies"]["gpu"] + project["dependencies"]]
problems = []
for req in wanted:
    name = canonicalize_name(req.name)
    if name not in gpu:
        problems.append(f"{req.name} (pyproject) is not pinned in requirements/gpu.lock")
    elif not req.specifier.contains(Version(gpu[name]), prereleases=True):
        problems.append(f"requirements/gpu.lock pins {name}=={gpu[name]}, pyproject wants {req}")
for name in sorted(set(gpu) & set(test)):
    if Version(gpu[name]).public != Version(test[name]).public:
        problems.append(f"{name}: gpu.lock {gpu[name]} but test.lock {test[name]}")
cuda = [n for n in test if n.startswith(("nvidia-", "cupy", "cudf", "dask-cuda", "rmm-", "libcudf"))]
if cuda:
    problems.append(f"requirements/test.lock installs CUDA packages: {', '.join(cuda)}")
if problems:
    sys.exit("gpu_check: " + "; ".join(problems))
extra = ", ".join(f"{canonicalize_name(Requirement(r).name)}=={gpu[canonicalize_name(Requirement(r).name)]}"
                  for r in project["optional-dependencies"]["gpu"])
print(f"  lock: {len(gpu)} pins; gpu extra {extra}; agrees with test.lock on {len(set(gpu) & set(test))} shared pins")
EOF
}

if [ "$DRY_RUN" = 1 ]; then
  PY="${PYTHON:-}"
  if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
  fi
  bash -n "$0"
  echo "  syntax: ok"
  check_lock "$PY"
  [ "${#GPU_TESTS[@]}" -gt 0 ] || { echo "gpu_check: no gpu-marked tests found under tests/" >&2; exit 1; }
  collected=$("$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider "${GPU_TESTS[@]}" | grep -c "::" || true)
  [ "$collected" -gt 0 ] || { echo "gpu_check: pytest collected no gpu tests" >&2; exit 1; }
  echo "  gpu tests: $collected collected in ${#GPU_TESTS[@]} files"
  "$PY" scripts/bench_gpu.py --dry-run | sed 's/^/  /'
  plan
  echo "gpu_check: dry run passed (nothing installed, nothing downloaded)"
  exit 0
fi

command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi; run this on a machine with an NVIDIA GPU (or pass --dry-run)" >&2; exit 2; }
plan
START=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check uv==0.13.8
tools=$(mktemp)
for t in "${TEST_TOOLS[@]}"; do grep -E "^${t}==" requirements/test.lock >>"$tools"; done
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --compile-bytecode \
  -r requirements/gpu.lock -r "$tools" -c requirements/test.lock
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
rm -f "$tools"
echo "installed in $((SECONDS - START)) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 300 "$VENV/bin/python" -m pytest -m gpu -q -p no:cacheprovider "${GPU_TESTS[@]}"
timeout 360 "$VENV/bin/python" scripts/bench_gpu.py --report "$REPORT"
echo "gpu_check: done in $((SECONDS - START)) s; table in $REPORT (copy it into docs/benchmarks.md)"
