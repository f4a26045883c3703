#!/usr/bin/env bash
# README quick start: installs (.venv), trains configs/demo.py on data/demo for a few minutes on the CPU, checkpoints,
# exports the last checkpoint to a Hugging Face folder, and prints where everything is and the first and last loss.
#   bash tools/launch/demo.sh [RUN_DIR=runs/demo] [extra tools/train.py flags, e.g. --config.total_steps=40]
# Rerunning resumes (or, when finished, only re-exports).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/demo}
shift || true
bash tools/setup_env.sh
PY=.venv/bin/python
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
[ -f data/demo/prepared/interleaved/manifest.json ] || $PY tools/make_demo_data.py
$PY tools/train.py --config=configs/demo.py --workdir="$RUN" "$@"
$PY tools/convert_orbax_to_hf.py --ckpt_dir="$RUN/checkpoints" --out_dir="$RUN/hf" --dtype=float32 --overwrite \
  > "$RUN/export.log" 2>&1 || { cat "$RUN/export.log"; exit 1; }
$PY - "$RUN" <<'PYEOF'
import json, os, sys
run = sys.argv[1]
recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
first, last = recs[0], recs[-1]
vals = [r for r in recs if r.get("val_loss") is not None]
print(f"\ncheckpoints: {run}/checkpoints (latest step {last['step']})\nmetrics:     {run}/metrics.jsonl, "
      f"TensorBoard: tensorboard --logdir {run}/tb\nHF export:   {run}/hf (transformers AutoModelForCausalLM)")
print(f"loss: first {first['loss']:.3f} (step {first['step']}) -> last {last['loss']:.3f} (step {last['step']})"
      + (f"; validation {vals[0]['val_loss']:.3f} -> {vals[-1]['val_loss']:.3f}" if vals else ""))
sys.exit(0 if last["loss"] < first["loss"] else "the loss did not fall")
PYEOF
