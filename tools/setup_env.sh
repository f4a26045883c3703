#!/usr/bin/env bash
# Creates ./.venv with slm_jax and its test extras at the versions pinned in requirements.lock (setup.py declares
# ranges; the lock pins the tested set); re-runs are no-ops unless setup.py or requirements.lock changed. Installs the Debian packages the tests and demo data need (espeak-ng, flite) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${SLM_JAX_SKIP_APT:-0}" != 1 ] && { ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null; }; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup_env] installing espeak-ng flite (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null \
      || echo "[setup_env] WARNING: apt install failed; speech-synthesis tests will skip"
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.slm_jax_installed
want=$(cat setup.py requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup_env] installing slm_jax and the locked dependencies into .venv (2.5-7 minutes on 2 cores, 2.9 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[test]"
  echo "$want" > "$stamp"
fi
