#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on the lent GPU machine (its image has torch, timm, pandas, scipy,
# seaborn, joblib, filelock, safetensors, but not these). Run here, from the repository root; .whl/ is ignored
# by git and travels with the device tool's `carry: [".whl"]`.
set -euo pipefail
rm -rf .whl && mkdir -p .whl
for spec in captum==0.9.0 medmnist==3.0.2 fire==0.7.1 termcolor==3.1.0; do
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$spec" \
      || .venv/bin/python -m pip download -q --no-deps --python-version 3.12 -d .whl "$spec"
done
ls -la .whl
