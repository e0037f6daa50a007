#!/usr/bin/env bash
# The paper in miniature: the whole InstructGPT method (prompts -> SFT -> K samples -> rankings ->
# reward model -> PPO-ptx and PPO -> evaluation -> report) from the embedded base model
# (Gemma 3 270M) and the bundled data, sized to say something about the paper's claims:
#
#   - PPO-ptx and PPO against SFT, judged blind by held-out simulated labelers, on held-out API users' prompts
#     (the paper's kind of test set) and on self-instruct's instructions, reported apart;
#   - SFT against the few-shot "prompted" pretrained model (win rates against SFT, so a prompted
#     rate below 0.5 means SFT is preferred);
#   - the reward model's accuracy on training vs held-out labelers' rankings;
#   - the alignment tax: PPO-ptx against PPO on DROP / SQuADv2 F1 and Fr->En BLEU.
#
# How long: 51.5 and 44.6 minutes of stages (seeds 0 and 1, 2026-12-07 morning, SFT on the 113 demonstrations that fit 64
# tokens, README "SFT on demonstrations that fit the response budget"; bf16 matmul peak 0.61 TFLOP/s that day); 57.7-59.5 minutes of stages with the evaluation on 195 held-out-user + 215 self-instruct test prompts
# (2026-12-06 night, docs/results-history.md, "The paper's kind of test set"; the evaluation 658-718 s of it, on a day the machine's bf16
# matmul peak measured 0.63 TFLOP/s); 56-57 minutes with 215 test prompts and 48 items per benchmark (docs/results-history.md, "Less
# noisy measurement"; the evaluation 572-598 s); 50.3 minutes whole from scratch on 2026-12-06
# evening with 128 prompts and 16 items, 12 PPO iterations and the trimmed vocabulary
# (2-core Xeon with AMX, bf16 peak 1.71 TFLOP/s; docs/results-history.md, "12 PPO iterations"). Before the trimmed vocabulary:
# 69.9 minutes whole from scratch on 2026-12-06 (a process per stage, on a Xeon with AMX whose
# bf16 peak measured only 0.74-1.47 TFLOP/s that day); 63-71 minutes on a quiet 2-core Intel Xeon with AMX (2.0 TFLOP/s bf16; docs/results-history.md, "PPO-ptx's start"
# and "Plain PPO from the pretraining-mix run", 2026-12-05/06, with the pretraining-mix init: PPO and PPO-ptx 64 episodes an iteration, about 30
# of them; 71.5-73.7 on a day that machine measured 1.1-1.4 TFLOP/s); the
# earlier preset (16 episodes an iteration) took about 80 minutes on a 2-core AMD EPYC with avx512_bf16
# (0.36 TFLOP/s bf16) and 36 on the Xeon. Today's preset on such an EPYC (no AMX): 71.8 minutes
# of stages at 0.344 TFLOP/s bf16 and 61.8 at 0.399, seed 0, 2026-12-07 (docs/results-history.md, "The same preset on
# a CPU without AMX"; docs/results-history.md, "The preset with one pass of the RM"); with the RM's two passes (since 2026-12-07
# midday) 66.6 minutes of stages at 0.364 TFLOP/s for seed 0 and about 72 for seed 1 (README, "Both seeds of the preset
# with the RM's two passes");
# not yet measured on an AMX CPU. Far less on a GPU. It is
# `instructgpt pipeline --preset miniature` (src/instructgpt/pipeline/presets/miniature.yaml), so a
# re-run skips finished stages.
#
# What to look for: the table printed at the end (also eval/report.html and eval/results.json
# under the run folder): win rates with 95% Wilson intervals and ties, RM accuracies, NLP scores
# and the "ptx - ppo" row, and the wall time of every stage.
#
# Usage: bash runs/paper_in_miniature.sh [RUN_DIR] [extra pipeline flags]
#        (RUN_DIR defaults to runs/paper-in-miniature; PYTHON overrides the interpreter, else
#        scripts/setup.sh installs into .venv first)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/paper-in-miniature}"
shift || true
if [ -z "${PYTHON:-}" ]; then
    bash scripts/setup.sh  # the package and its pinned dependencies in .venv, as the quickstart does
fi
python="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
start=$(date +%s)
"$python" -m instructgpt.cli.main pipeline --preset miniature --out-dir "$out" "$@"
echo "wall time: $(( $(date +%s) - start )) s (this invocation; stages skipped on a re-run are not counted)"
"$python" -m instructgpt.pipeline.summary "$out" | tee "$out/summary.txt"
