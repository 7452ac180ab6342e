#!/usr/bin/env bash
# Every GPU check of one session in one call (the lent machine has torch and timm, not captum/medmnist:
# those travel in .device/site). Usage on the device: bash benchmarks/gpu_session.sh "$OUT"
set -u
: "${SWEEP_CONFIGS:=[{\}]}"
OUT=${1:-/tmp/xaibench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.device/site:$PWD"
# without an install, methods/ and metrics/ reach the xaibench namespace through links
ln -sfn ../methods xaibench/methods
ln -sfn ../metrics xaibench/metrics
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
echo "== CUDA tests"; timeout 150 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
echo "== bench_training ViT-B/16 224"; timeout 100 python3 benchmarks/bench_training.py --device cuda --arch vit-b \
    --img-size 224 --in-chans 3 --batch-size 32 --n-masks 4 --repeats 5 --models ofa,vit,resnet50 2>&1 | tee "$OUT/bench_training_vitb.txt"
echo "== recipe sweep"; timeout "${SWEEP_SECONDS:-200}" python3 experiments/recipe_sweep.py --device cuda \
    --base '{"steps": 300, "init_steps": 300, "eval_every": 100}' --configs "$SWEEP_CONFIGS" 2>&1 | tee "$OUT/sweep.txt"
rm -f xaibench/methods xaibench/metrics
