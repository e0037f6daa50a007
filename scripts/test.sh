#!/usr/bin/env bash
# The test suite (offline, tiny random models; one test loads the embedded model).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,label
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
