#!/usr/bin/env bash
# One-shot GPU check for a lent H100/H200 (device tool): attention-path parity, then the Llama-3.2-3B train step.
#   bash tools/bench/gpu_suite.sh [OUT_DIR]
# Uses the machine's preinstalled jax/flax/optax (no network there); slm_jax runs from the source tree.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp}}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
timeout 120 python3 tools/bench/check_attention_paths.py 2>&1 | grep -v "^[IW][0-9]" | tee "$out/attention.log"
timeout 420 python3 tools/bench_train.py --preset=llama3.2-3b --seq_len=2048 --dtype=bfloat16 --precision=bf16 \
  --attention_impl=cudnn --batch=8,4 --remat=auto --packed=both --steps=8 --max_seconds=280 2>&1 \
  | grep -v "^[IW][0-9]" | tee "$out/bench_train.log"
