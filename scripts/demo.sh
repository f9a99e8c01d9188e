#!/usr/bin/env bash
# The main job on the built-in default: sets up .venv, then trains VDSR-20 with the demo recipe
# (the scikit-image sample photos; 4 to 5 min on a 2-core CPU with native bfloat16, about 26 min on a
# 2-core AVX2-only CPU, which trains in float32) through `accelerate launch`,
# and ends with its validation PSNR against bicubic. Output: runs/demo/ (model.safetensors,
# summary.json, curves.png, TensorBoard logs). Extra arguments go to launch/train.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ -e runs/demo ]; then  # train.py never overwrites a run: keep the previous demo beside it
    prev="runs/demo.$(date +%Y%m%d-%H%M%S)"
    mv runs/demo "$prev" && echo "demo.sh: the previous demo run is now in $prev"
fi
# every launcher setting given (no warning about defaults); the precision is train.py's own
# choice (the recipe's bf16: auto: bfloat16 where the hardware has it, else float32); all cores
# compute (without the flag `accelerate launch` sets OMP_NUM_THREADS=1: one core of the CPU)
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    --num_cpu_threads_per_process "$(nproc)" \
    launch/train.py --config demo "$@"
.venv/bin/python - <<'PY'
import json
s = json.load(open("runs/demo/summary.json"))
for name, by in s["final_psnr"].items():
    for scale, v in by.items():
        b = s["bicubic_psnr"][name][scale]
        print(f"{name} x{scale}: VDSR {v:.2f} dB, bicubic {b:.2f} dB ({v - b:+.2f})")
print("curves: runs/demo/curves.png")
PY
