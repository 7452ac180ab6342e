#!/usr/bin/env bash
# Issues 16 (token dropping: speed and validity on CUDA) and 17 (every method, one table) in one call on one lent
# GPU, within a hard TOTAL (420 s) of wall time. Stages in order of priority, each step under `timeout`, capped by
# what is left of TOTAL (less RESERVE for the tables and packing), so a late overrun loses the least important:
#   1. speed: bench_metrics --masking token,drop (vit, ofa) at 196 patches (56 px, patch 4, tiny), 49 patches
#      (28 px) and ViT-B/16 224 px, median of 5; bench_training --maskings token,drop, M = 8, at 56 px / patch 4
#      and ViT-B/16 224 px (batch 32);
#   2. validity: `xaibench run` (defaults, --no-figures) with masking token and drop on synthetic seeds 0,1,2 and on
#      the genuine breastmnist + pneumoniamnist files, seed 0; experiments/masking_validity.py writes the table;
#   3. every registered method (`--methods '*'`, --keep-going) on the three sets, seed 0, on the OFA networks of
#      stage 2 (same cache), ViT-Shapley and FastSHAP fitted; experiments/methods_table.py writes the table;
#   4. $OUT: summary.md (every table, the step times), masking_validity.md, methods_table.md, runs.tar.gz (the run
#      folders), logs.tar.gz (every step's log).
# Usage (device tool, from the repository root, carry [".whl", ".gpudata"]):  bash benchmarks/gpu/issues16_17.sh "$OUT"
#   .whl: benchmarks/gpu/wheels.sh; .gpudata: breastmnist.npz and pneumoniamnist.npz (28 px), copied from
#   ../shared/data/medmnist (which does not travel); both named in .git/info/exclude.
# DRY=1 bash benchmarks/gpu/issues16_17.sh OUT: every step shrunk (few steps and images, small models) on the CPU
#   with .venv/bin/python, to prove the paths and arguments here; its numbers mean nothing.
set -u
OUT=${1:-/tmp/xaibench-16-17}
DRY=${DRY:-0}
STAGES=${STAGES:-123}  # which of the stages 1 (speed), 2 (validity), 3 (every method) run; the sweep: SWEEP=1
T0=$SECONDS
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [[ $DRY == 1 ]]; then
    PY=${PY:-.venv/bin/python}; DEVICE=cpu; SCALE=6; TOTAL=${TOTAL:-2400}; WORK=${WORK:-/tmp/xb1617-dry}
    CPU_THREADS=1  # the development machine's 2 cores are shared
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    INSTALL_WHEELS=${INSTALL_WHEELS:-0}
else
    PY=${PY:-python3}; DEVICE=cuda; SCALE=1; TOTAL=${TOTAL:-420}; WORK=${WORK:-/tmp/xb1617}
    CPU_THREADS=4  # masking_validity's CPU scoring beside stage 3's 4 workers
    INSTALL_WHEELS=${INSTALL_WHEELS:-1}
fi
SITE=${SITE:-/tmp/site}  # where the carried wheels are installed
RESERVE=15  # seconds of TOTAL kept for the tables' last lines and the packing
REPO=$PWD
DATA=$REPO/.gpudata
RUNS=$WORK/runs LOGS=$WORK/logs CACHE=$WORK/cache
TIMES=$WORK/times.md
rm -rf "$WORK" && mkdir -p "$RUNS" "$LOGS" "$CACHE"
export XAIBENCH_CACHE=$CACHE
printf '| step | exit | seconds | limit s |\n|---|---|---|---|\n' > "$TIMES"

step() {  # step NAME CAP COMMAND...: COMMAND under timeout (CAP x SCALE s, at most what is left), log in $LOGS/NAME.log
    local name=$1 cap=$(( $2 * SCALE )); shift 2
    local left=$(( TOTAL - RESERVE - (SECONDS - T0) ))
    (( cap > left )) && cap=$left
    if (( cap < 10 )); then
        echo "| $name | skipped: no time left | 0 | 0 |" | tee -a "$TIMES"
        return 124
    fi
    local start=$SECONDS rc
    echo "== $name (limit ${cap} s, at $((SECONDS - T0)) s)"
    timeout -k 10 "$cap" "$@" > "$LOGS/$name.log" 2>&1
    rc=$?
    echo "| $name | $rc$( ((rc == 124 || rc == 137)) && echo ' (timed out)') | $((SECONDS - start)) | $cap |" \
        | tee -a "$TIMES"
    return $rc
}

# ---- 0. environment: wheels, the xaibench namespace, the device
if [[ $DRY != 1 ]] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no GPU: torch sees no CUDA device here; nothing measured (DRY=1 runs the shrunk steps on the CPU)" \
        | tee "$OUT/summary.md"
    exit 3
fi
if [[ $INSTALL_WHEELS == 1 ]]; then  # captum, medmnist (+ fire, termcolor), zennit, grad-cam (+ ttach), torchcam
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "wheel install failed" | tee "$OUT/summary.md"; exit 4; }
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
LINKED=0
if ! $PY -c "import xaibench.methods, xaibench.metrics" 2>/dev/null; then  # not installed: link the two folders in
    ln -sfn ../methods xaibench/methods && ln -sfn ../metrics xaibench/metrics && LINKED=1
fi
trap '[[ $LINKED == 1 ]] && rm -f "$REPO/xaibench/methods" "$REPO/xaibench/metrics"' EXIT
{
    if [[ $DEVICE == cuda ]]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
    $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'cpus', __import__('os').cpu_count())"
    $PY -c "import captum, medmnist, zennit, pytorch_grad_cam, ttach; print('optional packages: ok')"
} > "$WORK/env.txt" 2>&1
cat "$WORK/env.txt"
$PY -m xaibench.cli list methods > "$LOGS/list_methods.log" 2>&1
grep -i "not installed" "$LOGS/list_methods.log" >> "$WORK/env.txt"
echo "setup: $((SECONDS - T0)) s"

# ---- 1. issue 16, speed (bench scripts; --device cuda, batches that fill the card)
if [[ $DRY == 1 ]]; then
    SMALL=(--n-images 2 --repeats 1 --bare-batches 1 --batch-size 64) SMALL49=("${SMALL[@]}")
    BIG=(--n-images 1 --repeats 1 --bare-batches 1 --batch-size 16)
    VITB=(--arch vit-b --img-size 32 --patch-size 16 --in-chans 3)  # ViT-B's code path at 4 patches
    TRAIN_SMALL=(--batch-size 2 --repeats 1 --rounds 1) TRAIN_BIG=(--batch-size 2 --repeats 1 --rounds 1)
else
    SMALL=(--n-images 128 --repeats 5 --bare-batches 8 --batch-size 1024)
    SMALL49=(--n-images 256 --repeats 5 --bare-batches 8 --batch-size 1024)
    BIG=(--n-images 32 --repeats 5 --bare-batches 4 --batch-size 256)
    VITB=(--arch vit-b --img-size 224 --patch-size 16 --in-chans 3)
    TRAIN_SMALL=(--batch-size 256 --repeats 5 --rounds 3) TRAIN_BIG=(--batch-size 32 --repeats 5 --rounds 3)
fi
# drop = the device's own grouping rule (on CUDA: packed curve calls, the cost rule at drop_call_share 0.02);
# drop@0.05: the cost rule at 0.05; drop@b8: the CPU's bucket rule (benchmarks/harness.py, masked_model).
# (The 2026-11-28 call ran drop at 0.05 and drop@0.02; 0.02 became the default from it.)
BM=(benchmarks/bench_metrics.py --device "$DEVICE" --models vit,ofa)
BT=(benchmarks/bench_training.py --device "$DEVICE" --n-masks 8)
if [[ $STAGES == *1* ]]; then
step s1_metrics_196 60 $PY "${BM[@]}" --masking token,drop,drop@0.05 --img-size 56 --patch-size 4 "${SMALL[@]}"
step s1_metrics_49 30 $PY "${BM[@]}" --masking token,drop --img-size 28 "${SMALL49[@]}"
step s1_metrics_vitb 80 $PY "${BM[@]}" --masking token,drop "${VITB[@]}" "${BIG[@]}"
step s1_training_196 45 $PY "${BT[@]}" --maskings token,drop,drop@0.05,drop@0.1 --img-size 56 --patch-size 4 "${TRAIN_SMALL[@]}"
step s1_training_vitb 50 $PY "${BT[@]}" --maskings token,drop,drop@0.05,drop@b8 "${VITB[@]}" "${TRAIN_BIG[@]}"
fi

# ---- issue 14's recipe sweep on the objects set (benchmarks/gpu/objects_sweep.py), beside stages 2 and 3 (their
# timings are not the point); not in DRY mode (full trainings)
if [[ $DRY != 1 && ${SWEEP:-1} == 1 ]]; then
    step s4_objects_sweep 240 $PY benchmarks/gpu/objects_sweep.py --device "$DEVICE" --seeds 0,1,2 --jobs 6 \
        --out "$WORK/sweep.md" &
fi

# ---- 2. issue 16, validity: both maskings, 4 runs side by side (loky, one thread per unit)
if [[ $DRY == 1 ]]; then
    SHRINK=(--set steps=10 --set init_steps=5 --set eval_every=5 --set data.synthetic.n_samples=200 --n-test 4
            --curve-points 5)
    JOBS_SYN=1 JOBS_MED=1
else
    SHRINK=() JOBS_SYN=3 JOBS_MED=2
fi
XB=($PY -m xaibench.cli run --device "$DEVICE" --no-figures --quiet --data-root "$DATA" --cache "$CACHE"
    --set run.sanity_images=0)
DROP=(--set 'model_options={"masking":"drop"}')
S2=$SECONDS
if [[ $STAGES == *2* ]]; then
step s2_token_synthetic 150 "${XB[@]}" --datasets synthetic --seeds 0,1,2 --out "$RUNS/token-synthetic" \
    --backend loky --jobs $JOBS_SYN --threads 1 "${SHRINK[@]}" &
step s2_token_medmnist 150 "${XB[@]}" --datasets breastmnist,pneumoniamnist --seeds 0 --out "$RUNS/token-medmnist" \
    --backend loky --jobs $JOBS_MED --threads 1 "${SHRINK[@]}" &
step s2_drop_synthetic 150 "${XB[@]}" --datasets synthetic --seeds 0,1,2 --out "$RUNS/drop-synthetic" \
    --backend loky --jobs $JOBS_SYN --threads 1 "${DROP[@]}" "${SHRINK[@]}" &
step s2_drop_medmnist 150 "${XB[@]}" --datasets breastmnist,pneumoniamnist --seeds 0 --out "$RUNS/drop-medmnist" \
    --backend loky --jobs $JOBS_MED --threads 1 "${DROP[@]}" "${SHRINK[@]}" &
wait
echo "stage 2 runs: $((SECONDS - S2)) s"
# the table on the CPU (checkpoints scored on their whole test split) while stage 3 uses the GPU
OMP_NUM_THREADS=$CPU_THREADS step s2_masking_validity 60 $PY experiments/masking_validity.py \
    --runs "token=$RUNS/token-synthetic,$RUNS/token-medmnist" "drop=$RUNS/drop-synthetic,$RUNS/drop-medmnist" \
    --cache "$CACHE" --data-root "$DATA" &
VALIDITY=$!
else
VALIDITY=
fi

# ---- 3. issue 17: every method, seed 0, the three sets; cheap methods first (with OFA and the amortized ones),
# the perturbation methods (hundreds of forwards per image) second, so a timeout loses the second run only
SLOW='rise,captum.FeatureAblation,captum.Occlusion,captum.ShapleyValueSampling,captum.KernelShap,captum.Lime,'
SLOW+='captum.IntegratedGradients,gradcam.AblationCAM,gradcam.ScoreCAM'
FAST=$($PY - "$SLOW" <<'EOF'
import sys
from xaibench.registry import METHODS
slow = set(sys.argv[1].split(","))
print(",".join(name for name in METHODS.names() if name not in slow))
EOF
)
if [[ $DRY == 1 ]]; then
    OPTIONS='run.method_options={"vit_shapley":{"steps":3,"surrogate_steps":2},"fastshap":{"steps":3,"surrogate_steps":2},'
    OPTIONS+='"rise":{"n_masks":8},"captum.ShapleyValueSampling":{"n_samples":1},"captum.KernelShap":{"n_samples":8},'
    OPTIONS+='"captum.Lime":{"n_samples":8}}'
    M_ARGS=(--set "$OPTIONS" --backend loky --jobs 2 --threads 1 --unit-timeout 600)
else
    M_ARGS=(--backend loky --jobs 4 --threads 4 --unit-timeout 100)
fi
# no cascading-randomization sanity units here (run.sanity_images=0): the table needs scores and costs only
SETS=(--datasets synthetic,breastmnist,pneumoniamnist --seeds 0 --keep-going --set run.sanity_images=0)
if [[ $STAGES == *3* ]]; then
step s3_methods_fast ${FAST_CAP:-110} "${XB[@]}" "${SETS[@]}" --methods "$FAST" --out "$RUNS/methods-fast" "${M_ARGS[@]}" "${SHRINK[@]}"
step s3_methods_slow ${SLOW_CAP:-90} "${XB[@]}" "${SETS[@]}" --methods "$SLOW" --out "$RUNS/methods-slow" "${M_ARGS[@]}" "${SHRINK[@]}"
fi
[[ -n $VALIDITY ]] && wait $VALIDITY
wait  # the sweep (a background step)

# ---- 4. tables and packing (every step's output is kept, also a failed one's)
METHOD_RUNS=()
for run in methods-fast methods-slow; do [[ -f $RUNS/$run/manifest.json ]] && METHOD_RUNS+=("$RUNS/$run"); done
UNITS_FROM=()
for run in token-synthetic token-medmnist; do [[ -f $RUNS/$run/manifest.json ]] && UNITS_FROM+=("$RUNS/$run"); done
if (( ${#METHOD_RUNS[@]} )); then
    $PY experiments/methods_table.py "${METHOD_RUNS[@]}" --units-from "${UNITS_FROM[@]}" > "$OUT/methods_table.md" \
        2> "$LOGS/s3_methods_table.log" || echo "methods_table.py failed: see logs/s3_methods_table.log" >> "$OUT/methods_table.md"
else
    echo "no stage-3 run finished (see logs)" > "$OUT/methods_table.md"
fi
quiet() { grep -v -e 'Warning' -e '^  ' "$1"; }  # a log less its warnings (and their source lines)
if [[ -f $LOGS/s2_masking_validity.log ]]; then quiet "$LOGS/s2_masking_validity.log" > "$OUT/masking_validity.md"
else echo "masking_validity did not run (see logs)" > "$OUT/masking_validity.md"; fi
section() {  # section TITLE LOG: a log's text under a heading (its tables are Markdown already)
    printf '\n## %s\n\n' "$1"
    if [[ -f $2 ]]; then quiet "$2" | grep -v '^\s*$' | tail -40; else echo "(not run)"; fi
}
{
    echo "# Issues 16 and 17 on $( [[ $DEVICE == cuda ]] && echo 'the lent GPU' || echo 'the CPU (DRY: numbers mean nothing)')"
    echo; echo '```'; cat "$WORK/env.txt"; echo '```'
    printf '\n## Step times (total %s s of %s)\n\n' "$((SECONDS - T0))" "$TOTAL"; cat "$TIMES"
    section "1. bench_metrics, 196 patches (56 px, patch 4, tiny)" "$LOGS/s1_metrics_196.log"
    section "1. bench_metrics, 49 patches (28 px, tiny)" "$LOGS/s1_metrics_49.log"
    section "1. bench_metrics, ViT-B/16 224 px" "$LOGS/s1_metrics_vitb.log"
    section "1. bench_training, 196 patches (56 px, patch 4, tiny)" "$LOGS/s1_training_196.log"
    section "1. bench_training, ViT-B/16 224 px" "$LOGS/s1_training_vitb.log"
    printf '\n## 2. Masking validity (experiments/masking_validity.py)\n\n'; cat "$OUT/masking_validity.md"
    printf '\n## 3. Every method (experiments/methods_table.py)\n\n'; cat "$OUT/methods_table.md"
    printf '\n## 4. Objects recipe sweep (issue 14)\n\n'; cat "$WORK/sweep.md" 2>/dev/null || echo "(not run)"
} > "$OUT/summary.md"
cp "$TIMES" "$WORK/env.txt" "$LOGS/"
tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs
tar -C "$WORK" -czf "$OUT/runs.tar.gz" runs
if (( $(stat -c %s "$OUT/runs.tar.gz") > 15 * 2**20 )); then  # the limit on one file back is 16 MiB
    tar -C "$WORK" -czf "$OUT/runs.tar.gz" --exclude='curves.csv' --exclude='scores_long.csv' runs
fi
ls -la "$OUT"
echo "total: $((SECONDS - T0)) s"
