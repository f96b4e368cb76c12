#!/usr/bin/env bash
# GPU check for a lent GPU machine: a ~1.1B Llama (random weights, built from a config) trained
# for a few hundred steps with LoRA and with QLoRA; prints tokens/s, MFU and peak GPU memory.
# Needs a CUDA build of torch (e.g. `make install TORCH_SPEC=torch==2.14.1`). Fails with exit 2
# and one line when no CUDA GPU is visible. Extra arguments go to gpu_check.py (--steps, --batch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
