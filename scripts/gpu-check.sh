#!/usr/bin/env bash
# The GPU check: one script that verifies and measures the CUDA path on a machine with an NVIDIA GPU.
#
#   scripts/gpu-check.sh [OUT]      (OUT: where logs go; default $OUT, else gpu-check-out)
#   ONLY="1 4" scripts/gpu-check.sh   (run only the stages whose numbers are listed)
#   MAX_SECONDS=N                      (whole seconds: the limit of each timing of stage 4; default 30)
#
# Stages (each with its own time limit; a failing stage is recorded and the next one runs):
#   1. the `gpu`-marked tests (CUDA renderer = numba renderer to 1e-5: skull at the paper's settings,
#      dense and non-cubic volumes, more views than one launch, view volumes over several buffers;
#      CPU and CUDA store builds agree; the training targets' GPU branch = its CPU branch)
#   2. tomo bench render --backend cuda (1,332 views, skull and dense; kernel alone per launch layout)
#   3. tomo bench train: the paper network, fp32 (batch 32) and bf16 autocast (batch 16 and 32); the
#      released network (preset release, the paper-size configs'), bf16, batch 32 and 64; the paper
#      network with cuDNN's autotuning (batch 32 and 64) and in NCHW order (--memory-format nchw, batch
#      32 and 64; every network is NHWC otherwise)
#   4. tomo bench dataset: the paper dataset's 233,100 x-rays rendered alone, and rendered + written
#      into a sharded Zarr store by 16 render-species jobs (each timing bounded by MAX_SECONDS)
#   5. tomo train from a store at the paper's image settings (the store-backed loader), bf16, batch 32:
#      as it is (NHWC), with --memory-format nchw, and with --compile
#   6. the demo store built with the CUDA renderer, the demo network trained on CUDA (bf16), and
#      tomo evaluate --device cuda on its test species
#   7. tomo bench train: the paper network, bf16, batch 32, through torch.compile (and with CUDA
#      graphs, --compile-mode reduce-overhead)
#   8. torch.profiler of the paper network's bf16 training step, batch 32 (NHWC and NCHW): profile.txt
#   9. tomo bench evaluate and tomo bench nn on CUDA at the paper's sizes, on stage 5's store and
#      checkpoint (needs stage 5): the evaluation's phases per sample and its paper-scale projection
# OUT receives at most 8 files (env.txt, summary.txt, pytest.log, bench.log, train.log,
# evaluate.log, profile.txt, results.tar.gz with the training and evaluation logs).
# It needs the project's Python dependencies; where the machine lacks some, bring them as wheels in
# .whl/ (../shared/gpu/README.md): they are installed to a temporary folder first. zarr 3.1 needs
# google-crc32c too (that README's list lacks it); SimpleITK and Snakemake are not needed here.
set -u
OUT="${1:-${OUT:-gpu-check-out}}"
MAX_SECONDS="${MAX_SECONDS:-30}"
ONLY="${ONLY:-1 2 3 4 5 6 7 8 9}"
PY="${PYTHON:-python3}"
case "$MAX_SECONDS" in ''|*[!0-9]*) echo "MAX_SECONDS must be whole seconds, got '$MAX_SECONDS'" >&2; exit 2 ;; esac
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d /tmp/gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT  # the scratch stores (the dataset benchmark's holds about 15 GB)
SUMMARY="$OUT/summary.txt"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl \
        || { echo "installing .whl failed" | tee -a "$SUMMARY"; exit 1; }
    export PYTHONPATH="$WORK/site:$ROOT"
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
TOMO=("$PY" -m model.cli)
T0=$(date +%s)

stage() {  # stage NAME LIMIT_S LOG COMMAND...: run, log, record status and seconds in the summary
    local name=$1 limit=$2 log=$3; shift 3
    case " $ONLY " in *" ${name%% *} "*) ;; *) return 0 ;; esac
    local t=$(date +%s)
    echo "=== $name ($(date +%T), limit ${limit}s): $*" >>"$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    printf '%-34s rc=%-3s %4ss  (at %4ss)\n' "$name" "$rc" "$(( $(date +%s) - t ))" "$(( $(date +%s) - T0 ))" | tee -a "$SUMMARY"
    return 0
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$PY" - <<'EOF'
import platform, sys
print("python", sys.version.split()[0], platform.machine())
for m in ("numpy", "numba", "cupy", "torch", "zarr", "numcodecs", "scipy"):
    try:
        mod = __import__(m)
        print(m, mod.__version__)
    except Exception as e:
        print(m, "missing:", e)
import torch
print("torch cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import cupy
print("cupy runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
EOF
    nproc; free -g | head -2; df -h /tmp | tail -1
} >"$OUT/env.txt" 2>&1

stage "1 gpu tests" 150 "$OUT/pytest.log" "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
    tests/test_gpu.py tests/test_render.py tests/test_determinism.py tests/test_data_lock_guards.py
stage "2 bench render skull" 45 "$OUT/bench.log" "${TOMO[@]}" bench render --backend cuda --views 1332 --repeats 3
stage "2 bench render dense" 45 "$OUT/bench.log" "${TOMO[@]}" bench render --backend cuda --views 1332 --repeats 3 --volume dense
for run in "none 32" "bf16 16" "bf16 32"; do
    set -- $run
    stage "3 bench train paper $1 b$2" 45 "$OUT/bench.log" "${TOMO[@]}" bench train --preset paper \
        --device cuda --amp "$1" --batch-size "$2" --repeats 10
done
for b in 32 64; do   # the authors' released network (preset release: the paper-size configs' network)
    stage "3 bench train release bf16 b$b" 45 "$OUT/bench.log" "${TOMO[@]}" bench train --preset release \
        --device cuda --amp bf16 --batch-size "$b" --repeats 10
done
for b in 32 64; do
    stage "3 bench train paper bf16 b$b cudnn" 45 "$OUT/bench.log" "${TOMO[@]}" bench train --preset paper \
        --device cuda --amp bf16 --batch-size "$b" --repeats 10 --cudnn-benchmark
done
for b in 32 64; do
    stage "3 bench train paper bf16 b$b nchw" 45 "$OUT/bench.log" "${TOMO[@]}" bench train --preset paper \
        --device cuda --amp bf16 --batch-size "$b" --repeats 10 --memory-format nchw
done
stage "4 bench dataset" $((3 * MAX_SECONDS + 45)) "$OUT/bench.log" "${TOMO[@]}" bench dataset --backend cuda \
    --species 175 --workers 16 --max-seconds "$MAX_SECONDS" --out "$WORK/dataset"
rm -rf "$WORK/dataset"

stage "5 paper-settings store" 60 "$OUT/train.log" "${TOMO[@]}" build-demo -o "$WORK/paper" --species 6 --val 1 --test 1 \
    --views 128 --size 256 --steps 128 --volume-size 128 --backend cuda
for run in "plain" "nchw --memory-format nchw" "compiled --compile"; do
    set -- $run
    name=$1; shift
    stage "5 train paper bf16 b32 $name (store)" 150 "$OUT/train.log" "${TOMO[@]}" train "$WORK/paper/dataset.zarr" \
        -o "$WORK/paper-$name" --preset paper --steps 60 --batch-size 32 --warmup 0 --amp bf16 --workers 8 \
        --log-every 10 --val-every 1000 --val-samples 32 --ckpt-every 1000 --no-resume "$@"
done

stage "6 demo store (cuda renderer)" 60 "$OUT/evaluate.log" "${TOMO[@]}" build-demo -o "$WORK/demo" --species 28 \
    --val 4 --test 4 --views 96 --size 128 --steps 64 --volume-size 64 --backend cuda
stage "6 train demo (cuda)" 90 "$OUT/evaluate.log" "${TOMO[@]}" train "$WORK/demo/dataset.zarr" -o "$WORK/demo-run" \
    --preset demo --steps 800 --batch-size 16 --lr 0.005 --warmup 50 --val-every 200 --val-samples 256 \
    --ckpt-every 200 --seed 0
stage "6 evaluate --device cuda" 90 "$OUT/evaluate.log" "${TOMO[@]}" evaluate "$WORK/demo/dataset.zarr" \
    --checkpoint "$WORK/demo-run/best.pt" -o "$WORK/eval-cuda" --device cuda
stage "7 bench train paper bf16 b32 compiled" 120 "$OUT/bench.log" "${TOMO[@]}" bench train --preset paper \
    --device cuda --amp bf16 --batch-size 32 --repeats 10 --compile
stage "7 bench train paper bf16 b32 compiled graphs" 120 "$OUT/bench.log" "${TOMO[@]}" bench train \
    --preset paper --device cuda --amp bf16 --batch-size 32 --repeats 10 --compile-mode reduce-overhead
for run in "nhwc" "nchw --memory-format nchw"; do
    set -- $run
    name=$1; shift
    stage "8 profile paper bf16 b32 $name" 60 "$OUT/bench.log" "${TOMO[@]}" bench train --preset paper \
        --device cuda --amp bf16 --batch-size 32 --repeats 3 --profile "$WORK/profile-$name.txt" "$@"
    [ -f "$WORK/profile-$name.txt" ] && { echo "##### $name"; cat "$WORK/profile-$name.txt"; } >>"$OUT/profile.txt"
done
stage "9 bench evaluate paper sizes (cuda)" 150 "$OUT/evaluate.log" "${TOMO[@]}" bench evaluate \
    --store "$WORK/paper/dataset.zarr" --checkpoint "$WORK/paper-plain/best.pt" --samples 16 --device cuda
stage "9 bench nn paper sizes (cuda)" 90 "$OUT/evaluate.log" "${TOMO[@]}" bench nn \
    --store "$WORK/paper/dataset.zarr" --queries 256 --device cuda
tar -czf "$OUT/results.tar.gz" -C "$WORK" --ignore-failed-read demo-run/train_log.csv demo-run/val_log.csv \
    eval-cuda paper-plain/train_log.csv paper-nchw/train_log.csv paper-compiled/train_log.csv 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s" | tee -a "$SUMMARY"
rm -rf "$WORK"
