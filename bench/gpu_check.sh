#!/usr/bin/env bash
# GPU check, under 5 minutes on one GPU: install the project, run the tests that need CUDA, then time one
# MCU job (ResNet-18, CIFAR-shaped random data) with bench/gpu_speed.py, and with 2 or more GPUs the same job on
# every GPU against one (bench/gpu_scale.py).
#
#   bash bench/gpu_check.sh                       # on a machine with an NVIDIA GPU
#   bash bench/gpu_check.sh --device cpu --small  # anywhere: arguments go to bench/gpu_speed.py
#
# Python: $PYTHON if set, else the venv $VENV (default .venv), created if missing with access to the
# system's packages (so a preinstalled CUDA torch is used). torch is installed only if missing, as
# $TORCH_SPEC (the Makefile's; PyPI's Linux x86_64 build includes CUDA), and the project with its test
# tools only if they are missing, so a machine without network access works once they are present.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  VENV=${VENV:-.venv}
  [[ -x $VENV/bin/python ]] || python3 -m venv --system-site-packages "$VENV"
  PY=$VENV/bin/python
fi
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
"$PY" -c 'import torch, torchvision' 2>/dev/null || "$PY" -m pip install -q $TORCH_SPEC
"$PY" -c 'import numpy, scipy, sklearn, safetensors, pytest' 2>/dev/null || "$PY" -m pip install -q -e '.[dev]'
"$PY" -c 'import torch; print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPUs", torch.cuda.device_count())'

# Tests that need CUDA have "cuda" in their names; without a GPU they are skipped, not failed.
"$PY" -m pytest -q -p no:cacheprovider -k cuda tests/unlearning
"$PY" -m bench.gpu_speed "$@"
# The data-parallel path on GPUs (nccl ranks) where 2 or more are visible: N ranks against 1 (bench/gpu_scale.py).
if [[ " $* " != *" --device cpu "* ]] && (("$("$PY" -c 'import torch; print(torch.cuda.device_count())')" >= 2)); then
  "$PY" -m bench.gpu_scale
fi
