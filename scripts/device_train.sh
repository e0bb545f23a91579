#!/usr/bin/env bash
# Train a reasoner candidate on one GPU, then measure it (how eqsolve's shipped reasoner was
# trained; see eqsolve/assets/reasoner_MODEL_CARD.md).
#
#   OUT=runs/device TRAIN_S=150 MEASURE_S=50 bash scripts/device_train.sh
#
# Run from the repository root with eqsolve installed (pip install -e .). CANDIDATES picks
# which train (default: a); give each its own GPU run: three started at once here ran
# 0.65 steps/s each on an H200, one alone (also with fewer host syncs) 19 steps/s.
#   a  model/small (d=64), train/gpu, sot            the size the CPU bench can afford
#   b  d=128, train/gpu, sot                         does capacity pay?
#   c  model/small, train/gpu, grad=implicit with an Anderson forward (fixed points that
#      Anderson finds are the ones the loss sees)
#   d  model/small, train/gpu, sot plus the Jacobian penalty (train.jac_weight=1): a map with a
#      smaller Jacobian has fewer unstable fixed points for Anderson to land on
# Results land in $OUT: exported weights (<name>.pt), metrics, accuracy JSON, logs.
# SETS/GRID override the measurement; real lists are read from $EQSOLVE_SHARED_DATA/sudoku/.
set -u
REPO=$(pwd)
OUT=$(realpath -m "${OUT:-runs/device}")
TRAIN_S=${TRAIN_S:-150}
MEASURE_S=${MEASURE_S:-50}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
CANDIDATES=${CANDIDATES:-a}
EXTRA=${EXTRA:-}  # extra hydra overrides for every candidate (e.g. smoke tests)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
# a pre-built training pool saves generating it on the GPU machine; it must match the run's
# gen_easy/gen_hard/seed (checked), e.g. POOL=checkpoints/pools/<file> EXTRA="train.gen_hard=800"
POOL=$(realpath -m "${POOL:-$REPO/checkpoints/pools/pool_easy2000_seed0.npz}")  # generate_easy(2000, seed=0)
cd /tmp  # import the installed eqsolve, never the checkout's eqsolve/ folder

overrides() {
  case $1 in
    a) echo "" ;;
    b) echo "model.hidden_size=128" ;;
    c) echo "train.grad=implicit train.solver=anderson train.depth=16 train.tol=1e-3 train.backward_max_iter=20" ;;
    d) echo "train.jac_weight=1.0" ;;
  esac
}

t0=$(date +%s)
for name in $CANDIDATES; do
  mkdir -p "$OUT/$name"
  cp "$POOL" "$OUT/$name/pool.npz"
  # shellcheck disable=SC2046
  $PY -m eqsolve train --out "$OUT/$name" --seed 0 train=gpu train.device="$DEVICE" \
    train.time_limit_s="$TRAIN_S" $(overrides "$name") $EXTRA > "$OUT/$name.train.log" 2>&1 &
done
wait
echo "training done after $(( $(date +%s) - t0 )) s"

for name in $CANDIDATES; do
  if [ -f "$OUT/$name/last.pt" ]; then
    $PY -m eqsolve.training.export "$OUT/$name/last.pt" "$OUT/$name.pt" > "$OUT/$name.export.log" 2>&1
  fi
done
# the candidate that can ship gets the paper's headline setting (64 x 128) on the real lists
grid_for() { case $1 in a) echo "16x1,64x1,64x16,64x128" ;; *) echo "16x1,64x1,64x16" ;; esac; }
sets_for() { case $1 in a) echo "magictour,forum:500" ;; *) echo "magictour:500,eval:300" ;; esac; }
for name in $CANDIDATES; do
  [ -f "$OUT/$name.pt" ] || continue
  timeout "$MEASURE_S" $PY -m eqsolve.training.measure "$OUT/$name.pt" --device "$DEVICE" \
    --sets "${SETS:-$(sets_for "$name")}" --grid "${GRID:-$(grid_for "$name")}" --max-rows 65536 \
    --out "$OUT/$name.measure.json" > "$OUT/$name.measure.log" 2>&1 &
done
wait
echo "all done after $(( $(date +%s) - t0 )) s"
