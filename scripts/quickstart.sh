#!/usr/bin/env bash
# The main job: the whole method on the embedded base model (Gemma 3 270M) and bundled data:
# prompt preparation -> SFT -> samples -> rankings -> reward model -> PPO-ptx and PPO ->
# evaluation -> report (runs/pipeline/eval/report.html). Extra arguments go to
# `instructgpt pipeline` (e.g. --preset large).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec .venv/bin/instructgpt pipeline "$@"
