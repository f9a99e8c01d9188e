#!/usr/bin/env bash
# The main job on the built-in default: sets up .venv, then evaluates bicubic x2/x3/x4 under the
# standard protocol on the scikit-image sample photos (no data download needed).
# Extra arguments go to `vdsr eval` (for example --data ../shared/data/Set5 ../shared/data/Set14).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec .venv/bin/vdsr eval --scales 2 3 4 --method bicubic --json outputs/demo-eval.json "$@"
