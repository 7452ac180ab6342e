#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh and benchmarks/gpu/issues16_17.sh install on the lent GPU machine. Its image
# (Python 3.12) has torch, torchvision, timm, numpy, pandas, scipy, scikit-learn, scikit-image, matplotlib, seaborn,
# tqdm, pillow, click, packaging, joblib, filelock, safetensors and opencv-python-headless, but not these:
#   captum (methods captum.*), medmnist (MD5 table of the MedMNIST+ files) + fire + termcolor (medmnist's needs),
#   zennit (extra lrp: zennit.lrp), grad-cam (extra cam: gradcam.*) + ttach (grad-cam's one need the image lacks),
#   torchcam (not imported by xaibench; carried because issue 17 names it; its needs are all in the image).
# Versions: constraints/ci.txt (torchcam: the one CI's venv holds). One version of each, pure-Python wheels.
# Run here, from the repository root; .whl/ is ignored by git and travels with the device tool's `carry: [".whl"]`.
set -euo pipefail
rm -rf .whl && mkdir -p .whl
for spec in captum==0.9.0 medmnist==3.0.2 fire==0.7.1 termcolor==3.3.0 zennit==0.5.1 ttach==0.0.3 torchcam==0.5.0; do
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "$spec"
done
# grad-cam publishes only a source archive: build its pure-Python wheel (py3-none-any) here
.venv/bin/python -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7
ls -la .whl
du -sh .whl
