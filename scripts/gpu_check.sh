#!/usr/bin/env bash
# The project's check on a CUDA machine, in one call of at most 9.5 minutes (an H100 or H200 here: no network
# there, no model weights): the CUDA-relevant tests, SFT, RM and PPO-ptx for a few steps each
# (bench/gpu_stages.py), bench/generate.py eager and compiled, on a model of Gemma 3 270M's shapes with random
# weights (the embedded model's FLOPs; its GGUF cannot travel), then bench/sft.py and bench/reward.py --quick
# against TRL while time is left (a deadline of $GPU_CHECK_SECONDS, default 570, is shared by the parts).
#
#   bash scripts/gpu_check.sh      # writes to $OUT (the device tool's folder) or gpu-check/
#
# Packages the machine lacks, and the versions this project is tested with (transformers, accelerate, peft and
# what they need), travel as wheels in .whl/ (docs/gpu.md gives the download line); the data it reads (Alpaca,
# the pretraining documents) in .gpu-data/ (made by `bash scripts/gpu_check.sh --prepare` here, beside
# ../shared); the source runs from src/ (no install). Each part has its own time limit, so one that hangs does
# not cost the others; figures land in $OUT/*.json, the tests' log in $OUT/pytest.log and every other part's
# in $OUT/check.log (at most 8 files come back from the device tool).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then  # here, with ../shared: the data the check reads, into .gpu-data/
  data="${INSTRUCTGPT_DATA:-../shared/data}"
  mkdir -p .gpu-data/alpaca .gpu-data/pretrain/derived .gpu-data/self-instruct/human_eval
  cp "$data/alpaca/alpaca_5000.json" .gpu-data/alpaca/
  cp "$data/pretrain/derived/ptx_documents.jsonl.gz" .gpu-data/pretrain/derived/
  cp -r "$data/self-instruct/human_eval/predictions" .gpu-data/self-instruct/human_eval/  # bench/reward.py
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
deadline=$(( started + ${GPU_CHECK_SECONDS:-570} ))
part() {  # part NAME SECONDS COMMAND...: run within min(SECONDS, time left), log, say how it ended
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit < 30 )); then echo "== $name: skipped (${left} s left)"; return; fi
  echo "== $name (limit $limit s)"
  timeout "$limit" "$@" > "/tmp/gpu-check-$name.log" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - started )) s"
  { echo "== $name"; cat "/tmp/gpu-check-$name.log"; } >> "$out/check.log"
}
quiet() { grep -v "it/s\]" "/tmp/gpu-check-$1.log" | tail -n "$2"; }

part pytest 100 "$python" -m pytest -v --tb=short --maxfail 5 -p no:cacheprovider --timeout 60 \
  tests/test_sft.py tests/test_rm_train.py tests/test_ppo.py tests/test_ppo_step.py tests/test_sampling.py tests/test_rollout.py \
  "tests/test_fsdp.py::test_the_documented_fsdp_config_trains_sft_sharded_on_cuda"
cp /tmp/gpu-check-pytest.log "$out/pytest.log" 2>/dev/null
echo "passed $(grep -c ' PASSED' "$out/pytest.log"), failed $(grep -c ' FAILED' "$out/pytest.log")"
grep -E "^(FAILED|ERROR)" "$out/pytest.log" | head -n 20

part gpu-stages 130 "$python" bench/gpu_stages.py --out "$out/gpu-stages.json"
quiet gpu-stages 8

part generate 110 "$python" bench/generate.py --model gemma-3-270m-random --batch-sizes 64 256 --repeats 1 \
  --out "$out/generate.json"
quiet generate 12

part generate-compiled 150 "$python" bench/generate.py --model gemma-3-270m-random --decode compiled \
  --batch-sizes 64 256 --repeats 1 --out "$out/generate-compiled.json"
quiet generate-compiled 10

part sft-quick 70 "$python" bench/sft.py --quick --out "$out/sft-quick.json"
quiet sft-quick 12

part reward-quick 90 "$python" bench/reward.py --quick --out "$out/reward-quick.json"
quiet reward-quick 12
