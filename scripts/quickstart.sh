#!/usr/bin/env bash
# The main job: SFT of the embedded base model (Gemma 3 270M) on bundled demonstrations,
# with greedy samples before and after. Extra arguments go to `instructgpt quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/instructgpt quickstart "$@"
