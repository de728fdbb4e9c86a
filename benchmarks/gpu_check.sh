#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU (e.g. an H200) that may lack this project's Python
# packages and any network. Bring wheels along first, on a machine with the registries:
#   pip download -d benchmarks/wheels -c constraints.txt -e ".[all]" onnxruntime-gpu==1.32.0
# then run this script there (it must finish within 8 minutes):
#   bash benchmarks/gpu_check.sh
# It sets up a venv from those wheels, runs mobilenetv2 pipelines on CUDA (TVM cuda target, ORT
# CUDA provider, torch cuda), compares labels with the CPU reference, times them, prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-benchmarks/wheels}
VENV=${VENV:-/tmp/fuzzconv-gpu-venv}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
  echo "no NVIDIA GPU here"; exit 2; }
if [ ! -x "$VENV/bin/fuzzconv" ]; then
  python3 -m venv "$VENV"
  if [ -d "$WHEELS" ]; then
    "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" -c constraints.txt -e ".[all]"
    "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" onnxruntime-gpu==1.32.0 || true
  else
    "$VENV/bin/pip" install -q -c constraints.txt -e ".[all]"
  fi
fi
export FUZZCONV_CACHE=${FUZZCONV_CACHE:-/tmp/fuzzconv-gpu-cache}
timeout 450 "$VENV/bin/python" benchmarks/gpu_check.py "$@"
