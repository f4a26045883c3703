#!/usr/bin/env bash
# The memory plan of the shipped recipes (BENCHMARKS.md): tools/aot_compile.py for each recipe and target, one JSON
# line per row appended to ${1:-memory_plan.jsonl}. TPU rows need libtpu (pip install -e .[tpu]); compiles of the
# 3B/7B steps take minutes each on a small CPU machine, so rows run one after the other.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-memory_plan.jsonl}
PY=${PYTHON:-python}
row() { echo "+ $*" >&2; timeout 3600 "$PY" tools/aot_compile.py "$@" 2>/dev/null | tail -1 >> "$OUT"; }
row --config=configs/sims_llama3_2_3b.py --topology=v5e:2x4
row --config=configs/sims_llama3_2_3b.py --topology=v5e:4x4
row --config=configs/sims_llama3_2_3b.py --topology=v5p:2x2x1
row --config=configs/sims_llama3_2_3b.py --topology=v4:2x2x1
row --config=configs/sims_llama3_2_3b.py --cpu_devices=8 --hbm_gb=80 --config.micro_batches=1
row --config=configs/sims_qwen2_5.py:7b --topology=v5p:2x2x1
row --config=configs/sims_qwen2_5.py:7b --topology=v5e:4x8
row --config=configs/slam_qwen2_5_0_5b.py --topology=v5e:1x1
row --config=configs/slam_qwen2_5_0_5b.py --topology=v5e:2x2
