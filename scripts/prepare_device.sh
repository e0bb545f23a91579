#!/usr/bin/env bash
# Prepare, on this machine, what scripts/device_solvers.sh needs on a GPU machine that reaches no
# package index: wheels of eqsolve's pure-Python dependencies the GPU image lacks (.whl/) and
# the official EqR model code (.eqr_official/, from a local snapshot of github locuslab/EqR).
#
#   bash scripts/prepare_device.sh            # then carry .whl and .eqr_official to the GPU run
#
# Both folders are build outputs: keep them out of git (e.g. in .git/info/exclude).
# PYVER is the GPU machine's Python (its wheels must match; these are pure Python anyway).
set -eu
PY=${PY:-python3}
PYVER=${PYVER:-3.12}
OFFICIAL_SRC=${OFFICIAL_SRC:-/work/.mirror/locuslab+EqR/repo}
mkdir -p .whl
for pkg in torchdeq==0.1.0 hydra-core==1.3.2 omegaconf==2.3.0; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$pkg"
done
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only
$PY -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w .whl
if [ -d "$OFFICIAL_SRC" ]; then
  $PY benchmarks/eqr_throughput.py --official "$OFFICIAL_SRC" --export-official .eqr_official
else
  echo "no snapshot of the official EqR code at $OFFICIAL_SRC: the GPU run skips the EqR map comparison"
fi
ls .whl
