#!/usr/bin/env bash
# Creates ./.venv with slm_jax and its test extras at the versions pinned in requirements.lock (setup.py declares
# ranges; the lock pins the tested set); re-runs are no-ops unless setup.py or requirements.lock changed. Installs the
# Debian packages the tests and demo data need (espeak-ng, flite) when missing.
# --tpu: also ./.venv-tpu for the tests marked `tpu` (tools/run_tests.sh runs them there): a venv on the same Python
# that sees .venv's packages (a .pth adds .venv's site-packages after its own) and holds slm_jax[tpu]'s one addition,
# libtpu, so the main suite never runs with libtpu installed and the TPU tests run on the locked versions (~1 min,
# 0.7 GB).
# Under CI (CI=true) a step that cannot be done (apt, the TPU venv) is an error; elsewhere the apt step only warns.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tpu=0
for arg in "$@"; do
  case "$arg" in
    --tpu) tpu=1 ;;
    *) echo "[setup_env] unknown argument $arg (known: --tpu)" >&2; exit 2 ;;
  esac
done
case "${CI:-}" in 1|true|TRUE|True|yes) ci=1 ;; *) ci=0 ;; esac

problem() {  # one line; fatal under CI
  if [ "$ci" = 1 ]; then
    echo "[setup_env] ERROR (CI=true): $1" >&2
    exit 1
  fi
  echo "[setup_env] WARNING: $1; the speech-synthesis tests will skip" >&2
}

if [ "${SLM_JAX_SKIP_APT:-0}" != 1 ] && { ! command -v espeak-ng >/dev/null || ! command -v flite >/dev/null; }; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup_env] installing espeak-ng flite (apt)"
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite; } >"$log" 2>&1
    then
      problem "apt-get install espeak-ng flite failed: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1)"
    fi
    rm -f "$log"
  else
    problem "espeak-ng / flite are missing and apt-get cannot install them here (needs apt-get and root)"
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

if [ "$tpu" = 1 ]; then
  [ -x .venv-tpu/bin/python ] || .venv/bin/python -m venv .venv-tpu
  stamp=.venv-tpu/.slm_jax_installed
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup_env] installing slm_jax[tpu] (libtpu) into .venv-tpu, on top of .venv's packages (~1 minute)"
    site() { "$1" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }
    pth="$(site .venv-tpu/bin/python)/_slm_jax_main_venv.pth"
    echo "import site; site.addsitedir('$(site .venv/bin/python)')" > "$pth"
    .venv-tpu/bin/python -m pip install -q -c requirements.lock -e ".[tpu]"
    .venv-tpu/bin/python -c "import libtpu, jax, pytest" \
      || { echo "[setup_env] ERROR: .venv-tpu cannot import libtpu / jax / pytest after the install" >&2; exit 1; }
    echo "$want" > "$stamp"
  fi
fi
