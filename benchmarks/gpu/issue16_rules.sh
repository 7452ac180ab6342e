#!/usr/bin/env bash
# Issue 16 on a lent GPU, second call: where drop masking's time goes at ViT-B/16 224 px, and the training step at
# the validity runs' recipe (28 px, batch 64, M = 4), within ~4 minutes (torch + timm only, no wheels needed).
#   1. bench_metrics ViT-B: token, drop (the CUDA rule: packed curve calls, cost-rule groups padded with an
#      attention mask), drop@b1 (exact-length groups: more calls, no mask, so SDPA's flash kernel);
#   2. bench_training ViT-B, batch 32, M = 8: token, drop, drop@0.05, drop@b1 (each round printed as it ends:
#      the 2026-11-28 call timed out at 100 s and printed nothing);
#   3. bench_training tiny 28 px, batch 64, M = 4: token, drop.
# Usage (device tool, carry [".whl"]: xaibench.data imports medmnist): bash benchmarks/gpu/issue16_rules.sh "$OUT"
set -u
OUT=${1:-/tmp/xaibench-16}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no GPU: nothing measured" | tee "$OUT/summary.md"; exit 3; }
ln -sfn ../methods xaibench/methods && ln -sfn ../metrics xaibench/metrics
trap 'rm -f xaibench/methods xaibench/metrics' EXIT
VITB=(--arch vit-b --img-size 224 --patch-size 16 --in-chans 3 --device cuda)
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
    echo "## bench_metrics, ViT-B/16 224 px"
    timeout 100 python3 benchmarks/bench_metrics.py --models vit,ofa --masking token,drop,drop@b1 "${VITB[@]}" \
        --n-images 32 --repeats 5 --bare-batches 4 --batch-size 256 2>&1 | grep -v Warning
    echo "## bench_training, ViT-B/16 224 px"
    timeout 100 python3 benchmarks/bench_training.py --maskings token,drop,drop@0.05,drop@b1 --n-masks 8 \
        "${VITB[@]}" --batch-size 32 --repeats 5 --rounds 3 2>&1 | grep -v Warning
    echo "## bench_training, tiny 28 px (the validity runs' recipe)"
    timeout 40 python3 benchmarks/bench_training.py --maskings token,drop --n-masks 4 --device cuda \
        --img-size 28 --batch-size 64 --repeats 5 --rounds 3 2>&1 | grep -v Warning
} 2>&1 | tee "$OUT/summary.md"
