#!/usr/bin/env bash
# The GPU half of the solver measurements (issue 14), in one call on a GPU machine:
#   1. the CUDA tests: the solve loop reads the device back at most once per check_every steps
#      (torch.cuda.set_sync_debug_mode), and the GPU paths agree with the CPU;
#   2. benchmarks/solvers.py on the GPU at batch 64 and 1024, d 512 and 2048, float32 and
#      bfloat16, against torchdeq in the same run (the small d=32 problems once, in the first
#      configuration: they do not depend on the sizes);
#   3. after the first configuration, when the official EqR code is at $OFFICIAL:
#      benchmarks/eqr_throughput.py on the GPU (eqsolve's EqR map against the official one at
#      batch 256 and 1024, and `eqsolve bench` time against breadth and depth);
#   4. then, with COMPILE_CHECK=1 (default) and two minutes of budget left: does torch.compile pay
#      on the GPU (benchmarks/solvers.py --compile-check at the first configuration's sizes:
#      Anderson's and Broyden's compiled updates, the whole compiled Anderson step, and the solve
#      loop's compiled bookkeeping, each against eager).
#
#   bash scripts/prepare_device.sh                        # here, once: .whl/ and .eqr_official/
#   OUT=runs/device-solvers bash scripts/device_solvers.sh # there, carrying .whl and .eqr_official
#
# Run from the repository root. Needs python3 with torch (CUDA), numpy, scipy, pytest,
# hypothesis, tqdm and matplotlib; eqsolve's other dependencies come from wheels in .whl/ when
# present (torchdeq, hydra-core, omegaconf, antlr4-python3-runtime: a machine without an index),
# and eqsolve itself is laid out from the checkout (eqsolve/ plus solvers/ as eqsolve/solvers),
# so nothing is built there. Results: $OUT/solvers-results.tgz (the JSON and markdown of every
# configuration, extracted into benchmarks/results/ they are the committed files) and
# $OUT/log. The configurations run in the order of CONFIGS while BUDGET_S lasts (300 s leaves a
# 15-minute GPU lease time to start the machine and to run again; a second call with CONFIGS set
# to the skipped ones finishes the grid); each problem's results are written as soon as it is
# measured, so a configuration cut short keeps what it did.
set -u -o pipefail
REPO=$(pwd)
OUT=$(realpath -m "${OUT:-runs/device-solvers}")
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-3}
BUDGET_S=${BUDGET_S:-300}
THREADS=${THREADS:-8}  # host threads: they build the problems (eigenvalues at d = 2048); the timed work is on the GPU
TESTS=${TESTS:-1}
OFFICIAL=${OFFICIAL:-$REPO/.eqr_official}
EQR_BATCHES=${EQR_BATCHES:-256,1024}
EQR_LIMIT=${EQR_LIMIT:-64}
# more options of eqr_throughput.py; the bench grid (breadth x depth, one process per cell) is
# off by default on the GPU (measured on the CPU), e.g. EQR_ARGS="--breadths 1,32,128 --depths 8,64,256"
EQR_ARGS=${EQR_ARGS:---no-grid}
COMPILE_CHECK=${COMPILE_CHECK:-1}
COMPILE_BACKEND=${COMPILE_BACKEND:-inductor}
# batch x d : dtype, most telling first
CONFIGS=${CONFIGS:-"64x512:float32 1024x2048:float32 64x512:bfloat16 1024x2048:bfloat16 1024x512:float32 64x2048:float32"}
LARGE="tanh_rho0.99 linear_[-0.95,0.95] linear_[-1.5,0.9] mixed_easy_hard tanh_slow_rho0.999 mixer_block"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
LOG="$OUT/log"
t0=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - t0) )); }

SITE=$(mktemp -d)
if compgen -G "$REPO/.whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$REPO"/.whl/*.whl >> "$LOG" 2>&1 \
    || { echo "installing the wheels of .whl/ failed (see $LOG)"; exit 1; }
fi
cp -r "$REPO/eqsolve" "$SITE/eqsolve" && cp -r "$REPO/solvers" "$SITE/eqsolve/solvers"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} 2>&1 | tee -a "$LOG"

status=0
if [ "$TESTS" = 1 ]; then
  # from outside the checkout, so that `eqsolve` is the copy laid out above
  (cd /tmp && timeout "$(left)" $PY -m pytest -q -p no:cacheprovider --rootdir "$REPO" \
      "$REPO/tests/test_cuda.py" "$REPO/tests/solvers/test_solvers_loop.py" -k "cuda or host_syncs") 2>&1 \
    | tee -a "$LOG" | tail -3 || status=1
fi

RES="$OUT/results"
mkdir -p "$RES"
first=1
for cfg in $CONFIGS; do
  sizes=${cfg%%:*}; dtype=${cfg##*:}; batch=${sizes%%x*}; d=${sizes##*x}
  if [ "$(left)" -lt 30 ]; then echo "skipped $cfg: budget spent" | tee -a "$LOG"; continue; fi
  problems=()
  # (read splits without globbing: the names hold brackets)
  [ $first = 1 ] || read -ra problems <<< "--problems $LARGE"
  echo "== $cfg" | tee -a "$LOG"
  (cd /tmp && timeout "$(left)" $PY "$REPO/benchmarks/solvers.py" --device "$DEVICE" --dtype "$dtype" \
      --batch "$batch" --d "$d" --runs "$RUNS" --threads "$THREADS" --no-gmres --out "$RES" "${problems[@]}" \
      --note "scripts/device_solvers.sh") >> "$LOG" 2>&1 || { echo "failed or timed out: $cfg" | tee -a "$LOG"; status=1; }
  if [ $first = 1 ] && [ -f "$OFFICIAL/COMMIT" ]; then
    if [ "$(left)" -lt 60 ]; then echo "skipped eqr_throughput: budget spent" | tee -a "$LOG"; else
      echo "== eqr_throughput" | tee -a "$LOG"
      (cd /tmp && timeout "$(left)" $PY "$REPO/benchmarks/eqr_throughput.py" --official "$OFFICIAL" \
          --device "$DEVICE" --batches "$EQR_BATCHES" --limit "$EQR_LIMIT" --runs "$RUNS" --out "$RES" \
          --note "scripts/device_solvers.sh" $EQR_ARGS) >> "$LOG" 2>&1 || { echo "failed or timed out: eqr_throughput" | tee -a "$LOG"; status=1; }
    fi
  fi
  if [ $first = 1 ] && [ "$COMPILE_CHECK" = 1 ]; then
    if [ "$(left)" -lt 120 ]; then echo "skipped compile check: budget spent" | tee -a "$LOG"; else
      echo "== compile check ($COMPILE_BACKEND)" | tee -a "$LOG"
      (cd /tmp && timeout "$(left)" $PY "$REPO/benchmarks/solvers.py" --compile-check --compile-backend "$COMPILE_BACKEND" \
          --device "$DEVICE" --dtype "$dtype" --batch "$batch" --d "$d" --runs "$RUNS" --threads "$THREADS" --out "$RES" \
          --note "scripts/device_solvers.sh") >> "$LOG" 2>&1 || { echo "failed or timed out: compile check" | tee -a "$LOG"; status=1; }
    fi
  fi
  first=0
done
tar -czf "$OUT/solvers-results.tgz" -C "$RES" . && rm -rf "$RES"
echo "done in $(( $(date +%s) - t0 )) s, status $status" | tee -a "$LOG"
exit $status
