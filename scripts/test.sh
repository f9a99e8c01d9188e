#!/usr/bin/env bash
# The test suite: sets up .venv, then runs pytest. Where no CUDA device is visible the Triton
# kernels run in the interpreter (TRITON_INTERPRET=1); on a GPU machine they are compiled and
# the parity tests exercise the compiled kernels. TRITON_INTERPRET set by the caller wins.
# Extra arguments go to pytest (for example -k parity).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [[ -z "${TRITON_INTERPRET:-}" ]]; then
    if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        export TRITON_INTERPRET=0
    else
        export TRITON_INTERPRET=1
    fi
fi
echo "test: TRITON_INTERPRET=$TRITON_INTERPRET ($([[ $TRITON_INTERPRET == 1 ]] && echo 'no CUDA device: kernels interpreted' || echo 'kernels compiled'))" >&2
exec .venv/bin/python -m pytest -q tests "$@"
