#!/usr/bin/env bash
# Every GPU section of the benchmark in one go, on a machine without network access:
#
#   bench/gpu_run.sh [--device cuda|cpu] [OUTDIR]
#
# 1. setup: installs what the image lacks (ray[tune], optuna, pydantic, jsonschema, tensorboardX,
#    iterative-stratification, nvidia-ml-py and hpa-tune) from the offline wheelhouse that
#    bench/gpu_wheelhouse.sh builds (.whl1/ + .whl2/ at the repository root; ray's wheel arrives
#    in two halves, joined here and checked against .whl2/SHA256SUMS). Skipped when ray, optuna
#    and hpa_tune's dependencies already import.
# 2. the sections of `python -m bench.gpu_bench`, each under its own time limit (the search's
#    sample is rendered in the background meanwhile): throughput
#    (plain fp32 vs fast path), compile (torch.compile off vs on), packing (1/2/4/8 trials per
#    GPU, memory estimate vs peak, a refused packing), search (hpa-tune run, --gpus-per-trial 0.25).
# 3. OUTDIR (default: $OUT if set, else bench/out/gpu) gets 8 files (what a device call brings
#    back at most): SECTION.json for the four sections, gpu.json (all of them, the machine, the
#    exit code and seconds of each step), summary.md (the tables), gpu_run.log (all output, with
#    nvidia-smi) and search.log (hpa-tune run's output). The search's experiment goes to a
#    temporary folder ($GPU_RUN_STORAGE to keep it).
#
# The limits add up to 7.5 minutes on CUDA, so a run ends within 8 whatever happens; `--device
# cpu` runs the same steps at tiny sizes (with longer limits: a rehearsal, on a loaded CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) OUTDIR=$1; shift ;;
  esac
done
OUTDIR=${OUTDIR:-${OUT:-bench/out/gpu}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
exec > >(tee -a "$OUTDIR/gpu_run.log") 2>&1
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HPA_TUNE_OFFLINE=1 RAY_AIR_NEW_OUTPUT=0
export PYTHONUNBUFFERED=1
export PATH="$(dirname "$PY"):$HOME/.local/bin:$PATH"
# Time limits in seconds per step: CUDA (450 in all; sample runs beside the others) and CPU.
if [ "$DEVICE" = cuda ]; then
  LIMITS=(setup=60 throughput=100 compile=90 packing=90 search=110 sample=240)
else
  LIMITS=(setup=300 throughput=600 compile=300 packing=300 search=600 sample=300)
fi
limit() { for kv in "${LIMITS[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }
WORK=$(mktemp -d)
export GPU_RUN_STEPS="$WORK/steps.tsv" GPU_RUN_ENV="$WORK/env.txt"
export GPU_RUN_STORAGE=${GPU_RUN_STORAGE:-$WORK/runs}
STATUS=$GPU_RUN_STEPS
: > "$STATUS"
echo "== gpu_run.sh --device $DEVICE -> $OUTDIR ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"

imports_ok() {
  "$PY" -c "import ray.tune, optuna, pydantic, jsonschema, tensorboardX, iterstrat, hpa_tune.cli" \
    2>/dev/null
}

setup() {
  if imports_ok; then echo "setup: every dependency imports already"; return 0; fi
  local wh
  wh=$(mktemp -d)
  cp .whl2/*.whl .whl2/SHA256SUMS "$wh"/ || { echo "setup: no .whl2/ wheelhouse"; return 1; }
  local ray
  ray=$(awk '{print $2}' .whl2/SHA256SUMS)
  # Part 1 arrives in an earlier device call (see bench/README.md) and waits in bench/out/whl1/.
  local part1
  part1=$(ls .whl1/"$ray".part-00 bench/out/whl1/"$ray".part-00 2>/dev/null | head -1)
  [ -n "$part1" ] || { echo "setup: no part 1 of $ray (.whl1/ or bench/out/whl1/)"; return 1; }
  cat "$part1" .whl2/"$ray".part-01 > "$wh/$ray" || return 1
  (cd "$wh" && sha256sum -c SHA256SUMS) || return 1
  # PIP_BREAK_SYSTEM_PACKAGES: an image's Python marked externally managed (PEP 668) still takes
  # these; --user when its site-packages is not writable.
  local pip=("$PY" -m pip install -q --no-index --find-links "$wh" --disable-pip-version-check)
  local names=("ray[tune]" optuna pydantic jsonschema tensorboardX iterative-stratification
    nvidia-ml-py)
  export PIP_BREAK_SYSTEM_PACKAGES=1
  "${pip[@]}" "${names[@]}" || "${pip[@]}" --user "${names[@]}" || return 1
  # hpa-tune without its dependencies: the image's torch, pandas, ... are whatever it has.
  "${pip[@]}" --no-deps hpa-tune || "${pip[@]}" --user --no-deps hpa-tune || return 1
  rm -rf "$wh"
  "$PY" -m pip check || true
  imports_ok || { "$PY" -c "import hpa_tune.cli"; return 1; }
}

run_step() {  # NAME COMMAND...: run under the step's limit; record exit code and seconds
  local name=$1; shift
  local start=$SECONDS
  echo "== $name (limit $(limit "$name") s)"
  timeout --kill-after=10 "$(limit "$name")" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "== $name: stopped at its time limit (its finished rows are kept)"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$STATUS"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  return $rc
}

export -f setup imports_ok
export PY
run_step setup bash -c setup || { echo "setup failed: nothing measured"; exit 1; }
{
  nvidia-smi 2>/dev/null || echo "(no nvidia-smi)"
  "$PY" -c "import json; from bench._machine import machine_info; print(json.dumps(machine_info(), indent=2, default=str))"
} > "$GPU_RUN_ENV" 2>&1
cat "$GPU_RUN_ENV"
# The search's sample is rendered on the CPU while the GPU sections run.
run_step sample "$PY" -m bench.gpu_bench sample --device "$DEVICE" --out "$OUTDIR" &
SAMPLE=$!
for section in throughput compile packing; do
  run_step "$section" "$PY" -m bench.gpu_bench "$section" --device "$DEVICE" --out "$OUTDIR"
done
wait $SAMPLE
run_step search "$PY" -m bench.gpu_bench search --device "$DEVICE" --out "$OUTDIR"
"$PY" -m bench.gpu_bench report --device "$DEVICE" --out "$OUTDIR"
echo "== done in $SECONDS s: $OUTDIR"
awk -F'\t' '$2 != 0 {bad = 1} END {exit bad}' "$STATUS"
