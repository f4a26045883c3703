#!/usr/bin/env bash
# One GPU node (e.g. 8x A100 / H100): one process drives every local GPU; the mesh comes from the config
# (default: fsdp over all devices). Also the per-node command of tools/launch/slurm_gpu.sbatch.
#   bash tools/launch/gpu_node.sh --config=configs/sims_llama3_2_3b.py --workdir=runs/sims3b \
#       --config.init.path=/models/Llama-3.2-3B --config.model.attention_impl=cudnn
# GPU XLA flags live here, not in library code. Extra flags: XLA_FLAGS="..." bash tools/launch/gpu_node.sh ...
set -euo pipefail
cd "$(dirname "$0")/../.."
export XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true ${XLA_FLAGS:-}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PY" tools/train.py "$@"
