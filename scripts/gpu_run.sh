#!/usr/bin/env bash
# One command for a lent GPU machine (H100/H200: python3 with torch 2.11 + triton 3.6, no DALI,
# no network): measures everything GPU-side in one call, in about 6 minutes (time limits per
# part: 1 + 1.7 + 2 + 1.8 + train minutes + 1 + 1 at the most), writing as it goes.
#
#   bash scripts/gpu_run.sh [--out DIR] [--data DIR] [--recipe NAME|FILE] [--train-minutes M]
#                           (--train-minutes: default 1.5; with --deadline, all that it leaves)
#                           [--resume CHECKPOINT_DIR]   (continue a run from an earlier call,
#                                                         or a CPU run's committed checkpoint)
#                           [--deadline SECONDS]  (the whole script ends inside this: train gets
#                                                  what the parts before it left, less 75 s)
#                           [--anneal]  (fit the recipe's lr decay into the train minutes at the
#                                        rate bench_train measured: scripts/plan_anneal.py)
#                           [--bench-precisions "bf16 tf32"]
#                           [--train-set "KEY=VALUE ..."]  (recipe overrides for the training
#                                        part, e.g. "init_weights=weights/vdsr20_x234.safetensors
#                                        ema_decay=0.999")
#                           [--train-only]  (install, train, eval: no parity or benchmarks, so the
#                                            call's time goes to training; --anneal then needs
#                                            --rate PATCHES_PER_S, e.g. 6000 on an H200)
#                           [--cuda-graph]  (train with the step as one CUDA graph, train.py
#                                            --cuda-graph, if the graph_check part first finds it
#                                            equal to the eager step; else eager. Then bench_train
#                                            gets graphed rows beside the eager ones)
#                           [--backend torch|triton|auto]  (the training step's backend, default
#                                            torch (cuDNN). triton: the fused Triton forward and
#                                            backward (kernels/stack.py), if triton_check passes
#                                            (else torch). auto: a race of the two
#                                            bare bf16 steps at batch 64, graphed as training will
#                                            be (part race, about half a minute), picks the
#                                            faster; triton must win by 2%. Triton then runs each
#                                            kernel's first config: VDSR_AUTOTUNE=first)
#                           [--quick-bench]  (with --train-only: before training, bench_train of
#                                            the torch bf16 step at batch 64 and 256, eager and, if
#                                            graph_check passed, graphed; bench_data of the device
#                                            stream, 1 and 8 batches at a time: about 1.5 minutes;
#                                            --anneal then takes its rate)
#                           [--pack DIR]  (at the end: DIR/gpu_run.tgz, the whole output but the
#                                          checkpoints, and DIR/checkpoint.tgz, the last one; for
#                                          the device tool, which returns a few shallow files:
#                                          --out /tmp/g --pack "$OUT")
#   bash scripts/gpu_run.sh --dry-run      # the same steps at toy sizes on the CPU (CI runs it)
#
# Parts (each with its own time limit; a failed part is reported and the others still run):
#   install        pip install --no-deps --no-build-isolation -e .
#   graph_check    (--cuda-graph) tests/test_graphed_step.py: the graphed step against the eager one, in the
#                  precision train runs in (bf16, or TF32 with --train-set "bf16=false tf32=true")
#   triton_check   (--backend auto, or triton with --cuda-graph) the Triton step's graph against its
#                  eager step, and the parity tests of its gradients and train step against torch's
#   race           (--backend auto) bench_train.py --no-loop --profile 3 of both bf16 steps -> OUT/benchmarks/race-<device>.json
#                  (each eager step's kernels by device time, and its launches a step)
#   parity         the kernel parity tests, compiled (TRITON_INTERPRET=0; one config per kernel)
#   bench_kernels  launch/bench_kernels.py            -> OUT/benchmarks/kernels-<device>.json/.md
#   bench_train    launch/bench_train.py (torch and triton backends, bf16 and TF32; the device
#                  stream on T91 + BSD200)            -> OUT/benchmarks/train-<device>.json
#   train          launch/train.py --config RECIPE (default paper-x80), checkpointing every minute, stopping at
#                  --train-minutes with the model written   -> OUT/run/
#   eval           vdsr eval on Set5 and Set14 (where it travelled) of that model -> OUT/run/eval.json
#   eval_ema       the same of its weight average (ema_decay > 0) -> OUT/run/eval-ema.json
# The images come from --data (default: gpu_data/, made by scripts/pack_gpu_data.py and named in
# the device call's carry; else ../shared/data): T91/, BSD200/, Set5/, and Set14/ if packed.
# Writes under $OUT (the device tool's output folder) or --out; prints a summary table at the
# end and exits 1 if any part failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY=0
OUTDIR="${OUT:-$ROOT/outputs/gpu_run}"
DATA=""
RECIPE="paper-x80"  # the recipe from scratch not yet run (the shipped model is paper-x8-restart2)
TRAIN_MIN=""  # --train-minutes; unset: 1.5, or with --deadline all that the deadline leaves
RESUME=()
DEADLINE=0
ANNEAL=0
BENCH_PRECISIONS="bf16 tf32"
TRAIN_SET=()
TRAIN_ONLY=0
RATE=""
PACK=""
GRAPH=0
QUICK_BENCH=0
BACKEND=torch
COMPILE_MODE="${VDSR_COMPILE_MODE:-max-autotune}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUTDIR="$2"; shift ;;
        --data) DATA="$2"; shift ;;
        --recipe) RECIPE="$2"; shift ;;
        --train-minutes) TRAIN_MIN="$2"; shift ;;
        --resume) [[ -d "$2" ]] || { echo "gpu_run: error: --resume $2: no such checkpoint folder" >&2; exit 2; }
                  RESUME=(--resume "$2"); shift ;;
        --deadline) DEADLINE="$2"; shift ;;
        --anneal) ANNEAL=1 ;;
        --bench-precisions) BENCH_PRECISIONS="$2"; shift ;;
        --train-set) read -r -a TRAIN_SET <<< "$2"; shift ;;
        --train-only) TRAIN_ONLY=1 ;;
        --rate) RATE="$2"; shift ;;
        --pack) PACK="$2"; shift ;;
        --cuda-graph) GRAPH=1 ;;
        --quick-bench) QUICK_BENCH=1 ;;
        --backend) BACKEND="$2"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "gpu_run: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$DATA" ]]; then
    if [[ -d "$ROOT/gpu_data/T91" ]]; then DATA="$ROOT/gpu_data"; else DATA="$ROOT/../shared/data"; fi
fi
for d in T91 BSD200 Set5; do
    [[ -d "$DATA/$d" ]] || { echo "gpu_run: error: $DATA/$d: no such folder (scripts/pack_gpu_data.py makes gpu_data/)" >&2; exit 2; }
done
EVAL_DATA=("$DATA/Set5")  # and Set14 where it travelled (pack_gpu_data.py --sets can leave it out)
if [[ -d "$DATA/Set14" ]]; then EVAL_DATA+=("$DATA/Set14"); else echo "gpu_run: $DATA/Set14: not here; eval on Set5 only" >&2; fi
if [[ -n "$TRAIN_MIN" ]] && { ! [[ "$TRAIN_MIN" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$TRAIN_MIN" == 0 ]]; }; then
    echo "gpu_run: error: --train-minutes $TRAIN_MIN: expected a number > 0" >&2; exit 2
fi
if ! [[ "$DEADLINE" =~ ^[0-9]+$ ]]; then
    echo "gpu_run: error: --deadline $DEADLINE: expected whole seconds (0: none)" >&2; exit 2
fi
if [[ -n "$RATE" ]] && ! [[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "gpu_run: error: --rate $RATE: expected patches/s, a number" >&2; exit 2
fi
if [[ $TRAIN_ONLY == 1 && $ANNEAL == 1 && -z "$RATE" && $QUICK_BENCH == 0 ]]; then
    echo "gpu_run: error: --train-only --anneal: give the training rate with --rate PATCHES_PER_S, or --quick-bench to measure it" >&2; exit 2
fi
if [[ ! "$BACKEND" =~ ^(torch|triton|auto)$ ]]; then
    echo "gpu_run: error: --backend $BACKEND: expected torch, triton or auto" >&2; exit 2
fi
if [[ $QUICK_BENCH == 1 && $TRAIN_ONLY == 0 ]]; then
    echo "gpu_run: error: --quick-bench goes with --train-only (without it the full benchmarks run)" >&2; exit 2
fi
if [[ -n "$PACK" ]]; then
    mkdir -p "$PACK" 2>/dev/null && [[ -w "$PACK" ]] || { echo "gpu_run: error: --pack $PACK: cannot write there" >&2; exit 2; }
fi
mkdir -p "$OUTDIR/logs" "$OUTDIR/benchmarks" || { echo "gpu_run: error: $OUTDIR: cannot create" >&2; exit 2; }

if [[ $DRY == 1 ]]; then
    bash "$ROOT/scripts/setup.sh"
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    export TRITON_INTERPRET=1
else
    PY="${PYTHON:-python3}"
    export TRITON_INTERPRET=0
fi
VDSR="$PY -m vdsr.cli"
export PYTHONUNBUFFERED=1

SUMMARY=()
FAILED=0
T_START=$(date +%s)
part() {  # part NAME LIMIT_SECONDS COMMAND...: run, log to OUT/logs/NAME.log, record the outcome
    local name="$1" limit="$2"
    shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*" | tee "$OUTDIR/logs/$name.log"
    timeout -k 10 "$limit" "$@" >>"$OUTDIR/logs/$name.log" 2>&1
    rc=$?
    local secs=$(( $(date +%s) - t0 ))
    status="ok"  # (global: the caller may read the outcome)
    if [[ $rc == 124 || $rc == 137 ]]; then status="TIMEOUT"; elif [[ $rc != 0 ]]; then status="FAILED (exit $rc)"; fi
    [[ $status == ok ]] || FAILED=1
    tail -n 4 "$OUTDIR/logs/$name.log" | sed 's/^/   /'
    SUMMARY+=("$(printf '%-14s %-18s %6ss  logs/%s.log' "$name" "$status" "$secs" "$name")")
}

graph_set() {  # --cuda-graph: the graph_check part, then cuda_graph=true for train if it passed
    [[ $GRAPH == 1 ]] || return 0
    # the graphed step's cases in the precision train runs in: bf16, or TF32 with --train-set "bf16=false tf32=true"
    local other=tf32
    [[ " ${TRAIN_SET[*]} " == *" bf16=false "* ]] && other=bf16
    part graph_check "$1" env VDSR_AUTOTUNE=first "$PY" -m pytest -q -p no:cacheprovider tests/test_graphed_step.py -k "not triton and not $other"
    if [[ $status == ok ]]; then TRAIN_GRAPH=(cuda_graph=true); else echo "gpu_run: graph_check failed: training with the eager step" >&2; fi
}
triton_check() {  # --backend triton|auto: the Triton step's graph against its eager step, and its gradients
    # and train step against torch's, compiled. Skipped (trusted) for --backend triton without
    # --cuda-graph: a resumed call on the machine where an earlier call checked and raced it.
    [[ $BACKEND != torch ]] || return 0
    if [[ $GRAPH == 0 && $BACKEND == triton ]]; then TRITON_OK=1; return 0; fi
    part triton_check "$1" env VDSR_AUTOTUNE=first "$PY" -m pytest -q -p no:cacheprovider tests/test_graphed_step.py \
        tests/test_parity_conv.py -k "triton or training_gradients or (dgrad and bf16) or (wgrad and bf16)"
    [[ $status == ok ]] && TRITON_OK=1
}
backend_set() {  # --backend: TRAIN_BACKEND (recipe override) and TRAIN_ENV for the train part; ARGS: the race's size arguments
    local pick="$BACKEND" graphed=() race_graph=() batch=64
    if [[ $BACKEND != torch && $TRITON_OK == 0 ]]; then
        echo "gpu_run: triton_check failed: training the torch step" >&2; pick=torch
    fi
    if [[ $pick == auto ]]; then
        [[ ${#TRAIN_GRAPH[@]} -gt 0 && $DRY == 0 ]] && { graphed=(--graph); race_graph=(--cuda-graph); }
        [[ $DRY == 1 ]] && batch=1
        local race="$OUTDIR/benchmarks/race-${DEV:-dry-run}.json"
        part race 150 env VDSR_AUTOTUNE=first "$PY" launch/bench_train.py --backends torch triton --precisions bf16 \
            --no-loop "${race_graph[@]}" --batch-sizes "$batch" "$@" --json "$race"
        pick=torch
        if [[ $status == ok ]]; then
            pick=$("$PY" scripts/pick_backend.py "$race" "${graphed[@]}" --batch "$batch" 2>>"$OUTDIR/logs/race.log") || pick=torch
            tail -n 1 "$OUTDIR/logs/race.log" | sed 's/^/   /'
        fi
    fi
    if [[ $pick == triton ]]; then TRAIN_BACKEND=(backend=triton); TRAIN_ENV=(env VDSR_AUTOTUNE=first); fi
    [[ $BACKEND == torch ]] || SUMMARY+=("$(printf '%-14s %-18s %7s  %s' backend "$pick" - "(--backend $BACKEND: what train ran)")")
}
quick_bench() {  # --quick-bench: bench_train and bench_data, short; ARGS: bench_train's size arguments
    [[ $QUICK_BENCH == 1 ]] || return 0
    local graph=() dev="cpu"
    [[ ${#TRAIN_GRAPH[@]} -gt 0 && $DRY == 0 ]] && graph=(--cuda-graph)
    [[ $DRY == 0 ]] && dev="cuda"
    part bench_train 150 "$PY" launch/bench_train.py --backends torch --precisions bf16 --config paper \
        --data "$DATA/T91" "$DATA/BSD200" --loader device "${graph[@]}" "$@" --json "$BENCH_JSON"
    local sizes=(--batches 500)  # the dry run: the CPU's float64 resize, a few small batches
    [[ $DRY == 1 ]] && sizes=(--batches 4 --batch-size 8)
    for chunk in 1 8; do
        part "bench_data_$chunk" 60 "$PY" launch/bench_data.py --data "$DATA/T91" "$DATA/BSD200" --loader device \
            --device "$dev" --chunk "$chunk" "${sizes[@]}" --rounds 1 \
            --json "$OUTDIR/benchmarks/data-device-chunk$chunk-${DEV:-dry-run}.json"
    done
}
TRAIN_GRAPH=()  # cuda_graph=true once graph_check passed
TRITON_OK=0  # triton_check passed (or was trusted)
TRAIN_BACKEND=()  # backend=triton where --backend picked it
TRAIN_ENV=()  # env VDSR_AUTOTUNE=first for the Triton step

# What --deadline keeps back from training: train.py's start-up and final save, the evals, the
# pack and the summary. On the H200 (2026-11-28) they took 14 + 10 + 1 s; 75 s leaves 50 spare.
RESERVE_S=75
train_minutes() {  # --train-minutes, cut to what --deadline leaves (less RESERVE_S)
    if [[ $DEADLINE == 0 ]]; then echo "${TRAIN_MIN:-1.5}"; return; fi
    "$PY" -c "import sys; left = ($DEADLINE - ($(date +%s) - $T_START) - $RESERVE_S) / 60
print(round(min(${TRAIN_MIN:-1e9}, left), 2) if left >= 0.5 else sys.exit('gpu_run: --deadline leaves under 0.5 min to train'))"
}
skip_training() {  # --deadline left too little: the summary says so, and the script fails
    FAILED=1
    SUMMARY+=("$(printf '%-14s %-18s %6ss  %s' train SKIPPED 0 '(--deadline: under 0.5 min left to train)')")
    SUMMARY+=("$(printf '%-14s %-18s %6ss  %s' eval SKIPPED 0 '(no model)')")
}
anneal_set() {  # --anneal: epochs=E lr_step_epochs=S from --rate, else BENCH_JSON's torch bf16 training-loop rate (graphed or not, as train runs)
    local rate="$RATE" minutes="$1" graphed=False
    shift
    [[ ${#TRAIN_GRAPH[@]} -gt 0 ]] && graphed=True
    [[ -n "$rate" ]] || rate=$("$PY" -c "import json, sys
rows = [r for r in json.load(open(sys.argv[1]))['rows'] if r['backend'] == 'torch' and r['precision'] == 'bf16']
same = [r for r in rows if r.get('cuda_graph', False) == $graphed]
if not same:  # no graphed row measured: the eager rate, which can only under-fill the time
    print('gpu_run: --anneal: no rate of the step as train runs it; the eager one', file=sys.stderr)
    same = rows
print(([r for r in same if r.get('batch', 64) == 64] or same)[0]['loop_patches_per_s'])" "$BENCH_JSON") || { echo "gpu_run: --anneal: no torch bf16 rate in $BENCH_JSON" >&2; return 1; }
    "$PY" scripts/plan_anneal.py --config "$RECIPE" --rate "$rate" --seconds "$(awk "BEGIN { print 60 * $minutes }")" \
        "${RESUME[@]}" --set "$@"
}

if [[ $DRY == 1 ]]; then
    part install 300 "$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
    BENCH_JSON="$OUTDIR/benchmarks/train-dry-run.json"
    graph_set 300
    triton_check 300
    if [[ $TRAIN_ONLY == 0 ]]; then
        part parity 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_parity_conv.py -k "parity_conv_first or float32_precisions"
        part bench_kernels 300 "$PY" launch/bench_kernels.py --smoke --repeats 1 --out "$OUTDIR/benchmarks"
        part bench_train 300 "$PY" launch/bench_train.py --depth 4 --steps 3 --batch-sizes 8 --precisions bf16 --log-every 2 \
            --config paper --data "$DATA/T91" --loader device --json "$BENCH_JSON"
    fi
    # (init_weights=null: a warm-start recipe's 64-channel weights do not fit the toy model)
    TOY=(channels=8 batch_size=8 patches_per_epoch=32 log_every=2 checkpoint_minutes=0.001 init_weights=null)
    TOY_STEPS=6  # a resumed dry run trains 6 steps more than its checkpoint
    if [[ ${#RESUME[@]} -gt 0 ]]; then
        TOY_STEPS=$(( 6 + $("$PY" -c "import json, sys; print(json.load(open(sys.argv[1] + '/train_state.json'))['step'])" "${RESUME[1]}" 2>/dev/null || echo 0) ))  # (no train_state.json: train.py says so)
    fi
    quick_bench --depth 4 --steps 3 --log-every 2 --batch-sizes 8
    backend_set --depth 3 --channels 16 --steps 1 --warmup 1 --profile 1  # (the Triton step in the interpreter: ~15 s at this size)
    if TMIN=$(train_minutes); then
        PLAN=()
        if [[ $ANNEAL == 1 ]]; then read -r -a PLAN < <(anneal_set "$TMIN" "${TOY[@]}" "${TRAIN_SET[@]}"); fi
        part train 300 "${TRAIN_ENV[@]}" "$PY" launch/train.py --config "$RECIPE" --data "$DATA/T91" --val-data "$DATA/Set5" \
            --output-dir "$OUTDIR/run" --loader device --depth 4 --max-steps "$TOY_STEPS" "${RESUME[@]}" \
            --set "${TOY[@]}" "${TRAIN_SET[@]}" "${TRAIN_GRAPH[@]}" "${TRAIN_BACKEND[@]}" "max_minutes=$TMIN" "${PLAN[@]}"
        part eval 300 $VDSR eval --data "$DATA/Set5" --scales 2 --method vdsr --checkpoint "$OUTDIR/run/model.safetensors" \
            --json "$OUTDIR/run/eval.json" --device cpu
        if [[ -f "$OUTDIR/run/model_ema.safetensors" ]]; then
            part eval_ema 300 $VDSR eval --data "$DATA/Set5" --scales 2 --method vdsr \
                --checkpoint "$OUTDIR/run/model_ema.safetensors" --json "$OUTDIR/run/eval-ema.json" --device cpu
        fi
    else
        skip_training
    fi
else
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || { echo "gpu_run: error: no CUDA device (use --dry-run on the CPU)" >&2; exit 2; }
    DEV=$("$PY" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
    part install 60 "$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
    BENCH_JSON="$OUTDIR/benchmarks/train-$DEV.json"
    graph_set 120  # first: the benchmarks then time the graph only where it was found right
    triton_check 150
    if [[ $TRAIN_ONLY == 0 ]]; then
        part parity 100 env VDSR_AUTOTUNE=first "$PY" -m pytest -q -p no:cacheprovider tests -k parity
        part bench_kernels 120 "$PY" launch/bench_kernels.py --repeats 20 --compile-mode "$COMPILE_MODE" --out "$OUTDIR/benchmarks"
        read -r -a BENCH_PREC <<< "$BENCH_PRECISIONS"
        BENCH_GRAPH=()
        [[ ${#TRAIN_GRAPH[@]} -gt 0 ]] && BENCH_GRAPH=(--cuda-graph)
        part bench_train 110 "$PY" launch/bench_train.py --config paper --data "$DATA/T91" "$DATA/BSD200" --loader device \
            --steps 50 --loop-steps 200 --precisions "${BENCH_PREC[@]}" "${BENCH_GRAPH[@]}" --json "$BENCH_JSON"
    fi
    quick_bench --batch-sizes 64 256 --steps 50 --loop-steps 300
    backend_set --steps 200 --profile 3  # --profile: where each eager step's time goes, kernel by kernel
    if TMIN=$(train_minutes); then
        PLAN=()
        if [[ $ANNEAL == 1 ]]; then read -r -a PLAN < <(anneal_set "$TMIN" checkpoint_minutes=1 "${TRAIN_SET[@]}"); fi
        TRAIN_LIMIT=$("$PY" -c "print(int(60 * $TMIN + 60))")
        part train "$TRAIN_LIMIT" "${TRAIN_ENV[@]}" "$PY" launch/train.py --config "$RECIPE" --data "$DATA/T91" "$DATA/BSD200" \
            --val-data "$DATA/Set5" --output-dir "$OUTDIR/run" --loader device "${RESUME[@]}" \
            --set checkpoint_minutes=1 "${TRAIN_SET[@]}" "${TRAIN_GRAPH[@]}" "${TRAIN_BACKEND[@]}" "max_minutes=$TMIN" "${PLAN[@]}"
        part eval 60 $VDSR eval --data "${EVAL_DATA[@]}" --scales 2 3 4 --method vdsr \
            --checkpoint "$OUTDIR/run/model.safetensors" --json "$OUTDIR/run/eval.json"
        if [[ -f "$OUTDIR/run/model_ema.safetensors" ]]; then
            part eval_ema 60 $VDSR eval --data "${EVAL_DATA[@]}" --scales 2 3 4 --method vdsr \
                --checkpoint "$OUTDIR/run/model_ema.safetensors" --json "$OUTDIR/run/eval-ema.json"
        fi
    else
        skip_training
    fi
fi

if [[ -n "$PACK" ]]; then  # the output but its checkpoints as one archive, the last checkpoint as another
    part pack 120 bash -c 'set -e; tar czf "$1/gpu_run.tgz" -C "$2" --exclude=./run/checkpoints .
last=$(ls -d "$2"/run/checkpoints/step-* 2>/dev/null | sort | tail -n 1)
if [[ -n "$last" ]]; then tar czf "$1/checkpoint.tgz" -C "$(dirname "$last")" "$(basename "$last")"; fi
ls -l "$1"' pack "$PACK" "$OUTDIR"
fi

echo
echo "gpu_run summary ($([[ $DRY == 1 ]] && echo 'dry run, CPU' || echo "$DEV")), $(( $(date +%s) - T_START ))s in all, output in $OUTDIR:"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUTDIR/summary.txt"
exit $FAILED
