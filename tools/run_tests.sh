#!/usr/bin/env bash
# Installs everything (venv, Debian packages) and runs the default test suite, one pytest worker per core; with no
# arguments also the tests marked `tpu` (AOT compiles for TPU topologies) in .venv-tpu, where libtpu is installed
# (SLM_JAX_TPU_TESTS=0 leaves them out, except under CI). Arguments go to the main suite's pytest only.
# Under CI (CI=true) every skip outside the opt-in slow tier fails (tests/conftest.py); `-rs` lists the skips.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${CI:-}" in 1|true|TRUE|True|yes) ci=1 ;; *) ci=0 ;; esac
tpu=0
if [ $# = 0 ]; then
  if [ "${SLM_JAX_TPU_TESTS:-1}" != 0 ]; then
    tpu=1
  elif [ "$ci" = 1 ]; then
    echo "[run_tests] ERROR: SLM_JAX_TPU_TESTS=0 under CI=true: the tpu tests run on every CI run" >&2
    exit 2
  fi
fi
if [ "$tpu" = 1 ]; then bash tools/setup_env.sh --tpu; else bash tools/setup_env.sh; fi
# One pytest worker per core, at most 4 (SLM_JAX_TEST_WORKERS overrides; 0 runs in this process): the tests are
# mostly XLA compiles, one core each.
cores=$(nproc)
status=0
if [ "$tpu" = 1 ]; then
  # First, so that the main suite's summary is the last line. Only the files that hold tpu tests (collecting every
  # module would import all of them for two tests).
  mapfile -t files < <(grep -l "pytest.mark.tpu" tests/test_*.py)
  [ ${#files[@]} -gt 0 ] || { echo "[run_tests] ERROR: no test file marks a test pytest.mark.tpu" >&2; exit 1; }
  echo "[run_tests] tpu tests in .venv-tpu (libtpu): ${files[*]}"
  .venv-tpu/bin/python -m pytest -q -p no:cacheprovider -rfEs -m tpu "${files[@]}" || status=$?
fi
# The main suite.
.venv/bin/python -m pytest -q -p no:cacheprovider -rfEs -n "${SLM_JAX_TEST_WORKERS:-$((cores < 4 ? cores : 4))}" \
  -m "not tpu" tests "$@" || status=$?
exit "$status"
