#!/usr/bin/env bash
# The test suite: sets up .venv, then runs pytest on the CPU. Triton kernels run in the
# interpreter here (TRITON_INTERPRET=1); on a GPU machine, run with TRITON_INTERPRET=0.
# Extra arguments go to pytest (for example -k parity).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TRITON_INTERPRET="${TRITON_INTERPRET:-1}"
exec .venv/bin/python -m pytest -q tests "$@"
