#!/usr/bin/env bash
# Lint, format check and type check (pyproject.toml [tool.ruff], [tool.mypy]); CI runs it before the tests.
# The tools come with the test extra (scripts/setup.sh test). Fix formatting with: .venv/bin/ruff format src bench tests scripts
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ruff ] && [ -x .venv/bin/mypy ] || bash scripts/setup.sh test,label
.venv/bin/ruff check src bench tests scripts runs
.venv/bin/ruff format --check src bench tests scripts runs
.venv/bin/mypy
