#!/usr/bin/env bash
# GPU check for a lent GPU machine, three steps (see benchmarks/gpu_check.py), each printing its
# figures as `<name>: <value>`; about 6-8 minutes on one H100/H200:
#   1. throughput: a ~1.1B Llama (random weights from a config, bf16), LoRA and QLoRA: tokens/s,
#      MFU, peak GPU memory; packing on vs off on variable-length examples;
#   2. flow: `tunegate run` end to end with model.task generation on a small Llama, on the GPU:
#      wall time, stage times, GPU memory of the flow process (evaluation, baseline) and worker;
#   3. serve: `tunegate serve-model` on the registered model: requests/s and p95 at 8 and 64
#      concurrent clients (skipped with a line while the model server is not in the checkout).
# Needs a CUDA build of torch; exits 2 with one line when no CUDA GPU is visible. The Makefile
# installs only when $(VENV)/.installed is missing or older than pyproject.toml, so
# `make install TORCH_SPEC=torch==2.14.1` keeps a .venv that already holds the CPU torch as it
# is. Either build a separate CUDA venv and point PYTHON at it:
#   make install VENV=.venv-cuda TORCH_SPEC=torch==2.14.1
#   PYTHON=.venv-cuda/bin/python benchmarks/gpu_check.sh 2>&1 | tee benchmarks/gpu_check.txt
# or replace the CPU one (`rm -rf .venv && make install TORCH_SPEC=torch==2.14.1`) and run
#   benchmarks/gpu_check.sh 2>&1 | tee benchmarks/gpu_check.txt
# The interpreter is $PYTHON when set (refused if not executable), else .venv/bin/python, else
# python3 from PATH. `--cpu` runs every step at toy sizes on the CPU (proves it runs; about 10
# minutes on 2 busy cores, benchmarks/gpu_check_cpu.txt). The serve step's model server runs in
# its own process group, stopped (SIGTERM, then SIGKILL) with every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
  [ -x "$PYTHON" ] || { echo "gpu_check: PYTHON=$PYTHON is not an executable" >&2; exit 2; }
elif [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
else
  PYTHON=python3
fi
echo "python: $PYTHON ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)'))"
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
