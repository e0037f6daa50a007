#!/usr/bin/env bash
# The project's check on a CUDA machine, in one call of at most about 8 minutes (an H100 or H200 here: no
# network there, no model weights): the CUDA-relevant tests, SFT, RM and PPO-ptx for a few steps each
# (bench/gpu_stages.py), then bench/generate.py, eager and compiled decode, all on a model of Gemma 3 270M's
# shapes with random weights (the embedded model's FLOPs; its GGUF cannot travel).
#
#   bash scripts/gpu_check.sh      # writes to $OUT (the device tool's folder) or gpu-check/
#
# Packages the machine lacks, and the versions this project is tested with (transformers, accelerate, peft and
# what they need), travel as wheels in .whl/ (docs/gpu.md gives the download line); the data it reads (Alpaca,
# the pretraining documents) in .gpu-data/ (made by `bash scripts/gpu_check.sh --prepare` here, beside
# ../shared); the source runs from src/ (no install). Each part has its own time limit, so one that hangs does
# not cost the others; figures land in $OUT/*.json, logs in $OUT/*.log (8 files: the device tool's limit).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then  # here, with ../shared: the data the check reads, into .gpu-data/
  data="${INSTRUCTGPT_DATA:-../shared/data}"
  mkdir -p .gpu-data/alpaca .gpu-data/pretrain/derived
  cp "$data/alpaca/alpaca_5000.json" .gpu-data/alpaca/
  cp "$data/pretrain/derived/ptx_documents.jsonl.gz" .gpu-data/pretrain/derived/
  du -sh .gpu-data .whl 2>/dev/null
  exit 0
fi
out="${OUT:-gpu-check}"
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false INSTRUCTGPT_DATA="$PWD/.gpu-data"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/gpu-check-site"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L
"$python" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name(0))"
started=$(date +%s)
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - started )) s"
}

part pytest 120 "$python" -m pytest -v --tb=short --maxfail 5 -p no:cacheprovider --timeout 60 \
  tests/test_sft.py tests/test_rm_train.py tests/test_ppo.py tests/test_ppo_step.py tests/test_sampling.py tests/test_rollout.py \
  "tests/test_fsdp.py::test_the_documented_fsdp_config_trains_sft_sharded_on_cuda"
echo "passed $(grep -c ' PASSED' "$out/pytest.log"), failed $(grep -c ' FAILED' "$out/pytest.log")"
grep -E "^(FAILED|ERROR)" "$out/pytest.log" | head -n 20

part gpu-stages 140 "$python" bench/gpu_stages.py --out "$out/gpu-stages.json"
grep -v "it/s\]" "$out/gpu-stages.log" | tail -n 12

part generate 120 "$python" bench/generate.py --model gemma-3-270m-random --batch-sizes 64 256 --repeats 1 \
  --out "$out/generate.json"
tail -n 12 "$out/generate.log"

part generate-compiled 170 "$python" bench/generate.py --model gemma-3-270m-random --decode compiled \
  --batch-sizes 64 256 --repeats 1 --out "$out/generate-compiled.json"
tail -n 10 "$out/generate-compiled.log"
