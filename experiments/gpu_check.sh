#!/usr/bin/env bash
# The one prepared GPU run of the NeuFace update (under 8 minutes on one H100):
#   the update step at 20 x 7 images in float32 and bfloat16 with model FLOP utilization, the
#   cheaper trainable_stages variants, per-clip seconds for the official schedule, and dataset
#   clips/hour for K = 1, 2, 4, 8 clips per device: gpu_check.json + summary.txt in the results folder.
#
#   bash experiments/gpu_check.sh [RESULTS_DIR]            # on the GPU machine (default: $OUT/gpu_check,
#                                                          #   else experiments/results/gpu_check)
#   bash experiments/gpu_check.sh --smoke [RESULTS_DIR]    # tiny, anywhere (a CPU test runs it)
#   (arguments after RESULTS_DIR go to experiments/gpu_check.py, e.g. --clips_per_device=1,2)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SMOKE=()
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=(--smoke); shift; fi
RESULTS="${1:-${OUT:-experiments/results}/gpu_check}"
shift || true
mkdir -p "$RESULTS"
if [[ ${#SMOKE[@]} -eq 0 ]]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$RESULTS/nvidia_smi.csv" 2>&1 || true
fi
# The NeuFace update: steps, per clip, dataset packing (a hard cap keeps the whole run in budget;
# every part is written to gpu_check.json as soon as it is measured).
timeout "${GPU_CHECK_TIMEOUT:-300}" python experiments/gpu_check.py "${SMOKE[@]}" --results="$RESULTS" "$@" \
  2>&1 | tee "$RESULTS/gpu_check.log" | grep -v "^[IW][0-9]" || true

# ---- other parts of the one GPU run: priors helpers add ONE line each below this marker ----
# (pretraining / self-training images/s; the caps add up to 300 + 90 + 80 s, within 8 minutes with start-up)
timeout "${GPU_PRETRAIN_TIMEOUT:-90}" python experiments/gpu_pretrain.py $([[ ${#SMOKE[@]} -gt 0 ]] && echo --tiny) --steps=10 --render_images=64 --out="$RESULTS/gpu_pretrain.json" 2>&1 | tee "$RESULTS/gpu_pretrain.log" | grep -v "^[IW][0-9]" || true
timeout "${GPU_SELF_TRAINING_TIMEOUT:-80}" python experiments/gpu_self_training.py $([[ ${#SMOKE[@]} -gt 0 ]] && echo --tiny) --steps=10 --out="$RESULTS/gpu_self_training.json" 2>&1 | tee "$RESULTS/gpu_self_training.log" | grep -v "^[IW][0-9]" || true
# ---- end of other parts ----

echo "results in $RESULTS"
test -s "$RESULTS/gpu_check.json"
