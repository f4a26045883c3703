#!/usr/bin/env bash
# Installs everything (venv, Debian packages) and runs the default test suite, one pytest worker per core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
# One pytest worker per core, at most 4 (SLM_JAX_TEST_WORKERS overrides; 0 runs in this process): the tests are
# mostly XLA compiles, one core each.
cores=$(nproc)
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${SLM_JAX_TEST_WORKERS:-$((cores < 4 ? cores : 4))}" \
  tests "$@"
