#!/usr/bin/env bash
# The main job: the whole method on the embedded base model (Gemma 3 270M) and bundled data:
# prompt preparation -> SFT -> samples -> rankings -> reward model -> PPO-ptx and PPO ->
# evaluation -> report (runs/pipeline/eval/report.html). Extra arguments go to
# `instructgpt pipeline` (e.g. --preset large; without --preset or --config it runs --preset quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
preset=(--preset quickstart)  # the quickstart preset (trimmed vocabulary) unless the arguments name a preset or config
for arg in "$@"; do
    case "$arg" in --preset|--preset=*|--config|--config=*) preset=() ;; esac
done
exec .venv/bin/instructgpt pipeline "${preset[@]}" "$@"
