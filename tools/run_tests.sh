#!/usr/bin/env bash
# Installs everything (venv, Debian packages) and runs the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
