#!/usr/bin/env bash
# Create .venv (once) and install the package with the CPU PyTorch wheel.
# usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
fi
# torch first and pinned: a plain "torch" requirement would pull several GB of CUDA packages.
.venv/bin/pip install --quiet "torch==2.13.0"
extras="${1:-}"
.venv/bin/pip install --quiet -e ".${extras:+[$extras]}"
