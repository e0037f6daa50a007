#!/usr/bin/env bash
# Build .venv-trl-ppo: a separate environment with TRL 1.12.0, the newest release that still
# ships the PPO trainer (as trl.experimental.ppo). The main environment keeps its own TRL.
# usage: bench/ppo_peer_env.sh   (then: python bench/ppo.py, which finds .venv-trl-ppo)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="${VENV:-.venv-trl-ppo}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# torch first and pinned (the CPU wheel), so nothing later pulls a CUDA build.
"$VENV/bin/pip" install --quiet "torch==2.13.0"
"$VENV/bin/pip" install --quiet "trl==1.12.0" "transformers>=5,<6" "accelerate>=1.0" "datasets" "psutil" "safetensors" "sentencepiece" "gguf"
"$VENV/bin/python" -c "import trl, torch, transformers; from trl.experimental.ppo import PPOTrainer; print('trl', trl.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
