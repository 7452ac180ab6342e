#!/usr/bin/env bash
# Every GPU check of issue 13 in one call, within 5 minutes on one H100 (so that a rerun fits 15 lent minutes):
#   1. the CUDA-marked tests;
#   2. `xaibench run --device cuda` end to end at ViT-B/16 224 px on two datasets (synthetic, and a format-true
#      PathMNIST+ fixture: RGB, 9 classes), short training (benchmarks/gpu/recipe.toml), SRG at every curve point;
#   3. bench_training (OFA step vs its passes), bench_metrics (SRG/R-SRG vs the bare forward), bench_explainers;
#   4. one table: test accuracy, the run's score units in masked inputs/s against bench_metrics' for the same
#      model and card (goal >= 0.9), wall times.
# Usage (device tool): bash benchmarks/gpu_check.sh "$OUT"   with `.whl` carried (benchmarks/gpu/wheels.sh makes it).
# Without a GPU it says so and exits 3: a GPU number is never estimated.
set -u
OUT=${1:-/tmp/xaibench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if ! python3 -c "import torch" 2>/dev/null; then
    echo "python3 here has no torch: run this on the lent GPU machine (its python3 holds torch)" | tee "$OUT/summary.md"
    exit 3
fi
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no GPU lent: torch sees no CUDA device here; nothing measured" | tee "$OUT/summary.md"
    exit 3
fi
if ls .whl/*.whl >/dev/null 2>&1; then  # captum, medmnist, ... the device image lacks
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PWD"
fi
# without an install, methods/ and metrics/ reach the xaibench namespace through links
ln -sfn ../methods xaibench/methods
ln -sfn ../metrics xaibench/metrics
trap 'rm -f xaibench/methods xaibench/metrics' EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
START=$SECONDS
echo "== CUDA tests"
timeout 60 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
echo "== xaibench run --device cuda, ViT-B/16 224 px, synthetic + pathmnist fixture"
DATA=/tmp/xaibench-fixtures
python3 -c "from xaibench.data.fixtures import write_fixture; write_fixture('pathmnist', 224, '$DATA', {'train': 40, 'val': 10, 'test': 8})"
RUN_START=$SECONDS
XAIBENCH_UNVERIFIED_DATA=$DATA timeout 170 python3 -m xaibench.cli run --device cuda --size 224 \
    --datasets synthetic,pathmnist --data-root "$DATA" --config benchmarks/gpu/recipe.toml --quiet \
    --out "$OUT/run" --cache /tmp/xaibench-cache 2>&1 | tail -15 | tee "$OUT/run.txt"
echo "run_seconds $((SECONDS - RUN_START))" | tee -a "$OUT/run.txt"
echo "== benchmarks"
(cd benchmarks && timeout 40 python3 bench_training.py --device cuda --arch vit-b --img-size 224 --in-chans 3 \
    --batch-size 32 --n-masks 4 --repeats 5 --models ofa,vit 2>&1) | tee "$OUT/bench_training.txt"
(cd benchmarks && timeout 40 python3 bench_metrics.py --device cuda --arch vit-b --img-size 224 --in-chans 3 \
    --batch-size 256 --n-images 16 --repeats 2 2>&1) | tee "$OUT/bench_metrics.txt"
(cd benchmarks && timeout 30 python3 bench_explainers.py --device cuda --arch vit-b --img-size 224 --in-chans 3 \
    --methods ofa,grad,attn,rollout,rise 2>&1) | tee "$OUT/bench_explainers.txt"
python3 benchmarks/gpu/summary.py "$OUT" "$((SECONDS - START))" | tee "$OUT/summary.md"
