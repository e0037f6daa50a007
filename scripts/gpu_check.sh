#!/usr/bin/env bash
# The project's check on a CUDA machine, in one call of about 8 minutes (an H200 here; no network
# there, no model weights): the CUDA-relevant tests, then bench/generate.py on a model of Gemma 3
# 270M's shapes with random weights (same FLOPs as the embedded model), eager and compiled decode.
#
#   bash scripts/gpu_check.sh                     # writes to $OUT (the device tool's folder) or gpu-check/
#
# Packages the machine lacks travel as wheels in .whl/ (see docs/gpu.md for the download line);
# the source runs from src/ (no install). Each part has its own time limit, so one that hangs
# does not cost the others; the figures land in $OUT/*.json and the logs in $OUT/*.log.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/gpu-check-site"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi -L
  "$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"
} > "$out/env.log" 2>&1
cat "$out/env.log"

started=$(date +%s)
echo "== tests on CUDA (the trainers and the rollout pick cuda when it is there)"
timeout 150 "$python" -m pytest -q -p no:cacheprovider --timeout 120 \
  tests/test_rollout.py tests/test_sampling.py tests/test_ppo_step.py tests/test_ppo.py tests/test_sft.py tests/test_rm_train.py \
  > "$out/pytest.log" 2>&1
echo "pytest exit $? after $(( $(date +%s) - started )) s"; tail -n 25 "$out/pytest.log"

echo "== generation, eager decode"
timeout 200 "$python" bench/generate.py --model gemma-3-270m-random --batch-sizes 16 64 256 --repeats 1 \
  --out "$out/generate.json" > "$out/generate.log" 2>&1
echo "exit $? after $(( $(date +%s) - started )) s"; tail -n 12 "$out/generate.log"

echo "== generation, compiled decode (CUDA graphs)"
timeout 170 "$python" bench/generate.py --model gemma-3-270m-random --decode compiled --batch-sizes 64 256 --repeats 1 \
  --out "$out/generate-compiled.json" > "$out/generate-compiled.log" 2>&1
echo "exit $? after $(( $(date +%s) - started )) s"; tail -n 10 "$out/generate-compiled.log"
