#!/usr/bin/env bash
# A TPU v4 / v5e / v5p slice: the same command on every host of the slice. tools/train.py sees a multi-host TPU
# (TPU_WORKER_HOSTNAMES) and calls jax.distributed.initialize(). The repo and the venv must exist at the same
# path on every worker, and the workdir on a filesystem all workers share (Filestore / NFS / gcsfuse mount).
#   TPU=my-v4-32 ZONE=us-central2-b bash tools/launch/tpu_pod.sh --config=configs/sims_qwen2_5.py:7b \
#       --workdir=/mnt/shared/runs/q7b --config.init.path=/mnt/shared/models/Qwen2.5-7B
set -euo pipefail
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE}"
REPO="${REPO:-\$HOME/slm_jax}"
ARGS=$(printf " %q" "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $REPO && PY=\$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ) && \$PY tools/train.py$ARGS"
