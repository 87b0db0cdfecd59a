#!/usr/bin/env bash
# The prepared GPU check: run it first whenever a task is lent a GPU (device time is short).
# Its steps' limits add up to 9 minutes, so it fits one 10-minute device call (timings seen on
# an H200, 2026-12-04: tests 95 s, train_gpt2 123 s, calibration ~80 s, detect 48 s, pipeline 109 s).
#
#   bash bench/gpu_check.sh [--nanogpt PATH/TO/nanoGPT] [--out DIR]   # on the GPU machine, < 9 min
#   bash bench/gpu_check.sh --smoke [--out DIR]                       # the same steps, tiny, on CPU (CI)
#
# In order, each bounded in time, each writing its output under DIR (default: $OUT, else
# bench-results/gpu-check), and going on when one fails (a summary lists which):
#   1. the GPU tests (pytest on the CUDA paths: runtime, allocator, hardware, training on cuda)
#   2. GPT-2 124M, torch.compile + bf16: our trainer, and nanoGPT's train.py beside it with
#      --nanogpt (tokens/s ratio, MFU) — bench/train_gpt2.py
#   3. the planner's predicted memory and step time against measured ones, three sizes —
#      bench/plan_calibration.py
#   4. `finegpt plan --detect` on this machine
#   5. pipeline_job on the shared sample with configs/gpu-sample.yaml
# Then copy the figures from DIR/summary.md into docs/benchmarks.md, with the machine.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0; NANOGPT=""; DIR="${OUT:-bench-results/gpu-check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --nanogpt) NANOGPT="$2"; shift ;;
    --out) DIR="$2"; shift ;;
    *) echo "gpu_check: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-.venv/bin/python}"; [ -x "$PY" ] || PY=python3
mkdir -p "$DIR"
export FINEGPT_HOME="${FINEGPT_HOME:-$PWD/$DIR/home}" DAGSTER_HOME="${DAGSTER_HOME:-$PWD/$DIR/dagster}"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
export TIKTOKEN_CACHE_DIR="${TIKTOKEN_CACHE_DIR:-$(cd ../shared/tiktoken-cache 2>/dev/null && pwd)}"
SAMPLE=../shared/data/fineweb-cc-main-2013-20-head300.parquet
SUMMARY="$DIR/summary.md"
{ echo "# GPU check $(date -u +%FT%TZ)$([ $SMOKE = 1 ] && echo ' (smoke, CPU)')"; echo;
  "$PY" -c "import torch, platform; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA', '|', platform.processor() or platform.machine())"; echo; } > "$SUMMARY"
FAILED=()

step() {  # step NAME SECONDS COMMAND...: run, log to DIR/NAME.log, note the result
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$DIR/$name.log" 2>&1
  local rc=$?
  echo "- $name: rc $rc in $((SECONDS - t0)) s (log: $DIR/$name.log)" >> "$SUMMARY"
  [ $rc -eq 0 ] || FAILED+=("$name")
  tail -n 25 "$DIR/$name.log" | sed 's/^/    /' >> "$SUMMARY"
}

if [ $SMOKE = 1 ]; then
  step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_runtime.py tests/engine/train/test_allocator.py
  step train_gpt2 300 "$PY" bench/train_gpt2.py --smoke --steps 4 --warmup 1 --micro-batch 2 \
    --grad-accum 1 --json "$DIR/train_gpt2.json" ${NANOGPT:+--nanogpt "$NANOGPT"}
  step plan_calibration 200 "$PY" bench/plan_calibration.py --sizes 1x32,2x64,2x128 --block 32 \
    --steps 1 --micro-batch 2
  step plan_detect 120 "$PY" -m finegpt_pipeline.plan --detect --no-calibrate --hours 0.01
else
  step tests 110 "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_runtime.py tests/engine/train/test_allocator.py \
    tests/engine/test_hardware.py tests/engine/train/test_ddp.py
  step train_gpt2 150 "$PY" bench/train_gpt2.py --steps 24 --warmup 8 --json "$DIR/train_gpt2.json" \
    ${NANOGPT:+--nanogpt "$NANOGPT"}
  step plan_calibration 80 "$PY" bench/plan_calibration.py --sizes 6x384,12x768 --steps 3
  step plan_detect 70 "$PY" -m finegpt_pipeline.plan --detect --hours 1
  mkdir -p "$DAGSTER_HOME"; cp -n docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null
  step pipeline_job 130 bash -c "tags=\$($PY -m assets.shards add --tags $SAMPLE) && \
    $PY -m assets.launch -j pipeline_job -c configs/gpu-sample.yaml --tags \"\$tags\""
fi

echo >> "$SUMMARY"
if [ ${#FAILED[@]} -eq 0 ]; then echo "all steps passed" >> "$SUMMARY"; else
  echo "FAILED: ${FAILED[*]}" >> "$SUMMARY"; fi
cat "$SUMMARY"
[ ${#FAILED[@]} -eq 0 ]
