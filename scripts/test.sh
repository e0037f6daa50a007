#!/usr/bin/env bash
# The test suite (offline, tiny random models; one test loads the embedded model).
# scripts/services.sh installs and starts PostgreSQL (loopback) and chromium when missing.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,label
# PostgreSQL on loopback and chromium for the labeling tests (those tests skip if this fails)
eval "$(bash scripts/services.sh || echo 'echo "scripts/services.sh failed" >&2')"
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
