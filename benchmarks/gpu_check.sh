#!/usr/bin/env bash
# GPU check for a lent GPU machine, three steps (see benchmarks/gpu_check.py), each printing its
# figures as `<name>: <value>`; about 6-8 minutes on one H100/H200:
#   1. throughput: a ~1.1B Llama (random weights from a config, bf16), LoRA and QLoRA: tokens/s,
#      MFU, peak GPU memory; packing on vs off on variable-length examples;
#   2. flow: `tunegate run` end to end with model.task generation on a small Llama, on the GPU:
#      wall time, stage times, GPU memory of the flow process (evaluation, baseline) and worker;
#   3. serve: `tunegate serve-model` on the registered model: requests/s and p95 at 8 and 64
#      concurrent clients (skipped with a line while the model server is not in the checkout).
# Needs a CUDA build of torch (e.g. `make install TORCH_SPEC=torch==2.14.1`); exits 2 with one line
# when no CUDA GPU is visible. `--cpu` runs every step at toy sizes on the CPU (proves it runs).
#   benchmarks/gpu_check.sh 2>&1 | tee benchmarks/gpu_check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false \
  DO_NOT_TRACK=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d /tmp/tunegate-gpu-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
started=$SECONDS
for step in throughput flow serve; do
  echo "== $step"
  "$PYTHON" benchmarks/gpu_check.py "$step" --work "$WORK" "$@"
done
echo "gpu_check_wall_s: $((SECONDS - started))"
