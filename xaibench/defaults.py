"""Recipes laid under the run options: each dataset's own training recipe and the presets (`--preset NAME`).

The run options and their defaults live on `xaibench.engine.options.RunOptions`; the training options and theirs
on `xaibench.training.TrainConfig`. This module holds only what is laid over those per dataset or per preset.
"""
from __future__ import annotations

from typing import Any

#: A dataset's own training recipe, under the run's [train] options (which win key by key): the objects set is
#: learnt (test accuracy 1.000 on 3 seeds, benchmarks/gpu/objects_sweep.py) by far less than the TrainConfig
#: defaults, which the MedMNIST results (results/) keep. Sized so that the plain `xaibench run` stays under 3 min
#: on 2 CPU cores.
DATASET_TRAIN: dict[str, dict[str, Any]] = {
    "objects": {"init_steps": 100, "steps": 300, "n_masks": 2},
}

#: Whole test sets: `n_test = "all"` (any count at least the largest test split, 8,827 images in OrganSMNIST+).
ALL_IMAGES = 2**31 - 1

#: `--preset NAME`: a recipe laid over the defaults before the --config file, the flags and --set (which all win).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting (Sec. 3 of One For All; SPEC §3): ViT-B/16 at 224 px (196 patches) with 4 registers,
    # started from DINOv2 (timm's ViT-B/14 weights, patch embedding and position grid resampled to /16),
    # M = 32 masks, batch 64, AdamW lr 1e-5 and weight decay 1e-5, ~10k steps and at most 100 epochs, no
    # Segm warm start; every test image scored at every curve point, on the nine MedMNIST+ sets.
    "paper": {
        "run": {"methods": ["ofa", "grad", "attn"], "datasets": ["all"], "size": 224, "n_test": "all",
                "curve_points": "all", "batch_size": 64},
        "train": {"arch": "vit-b", "patch_size": 16, "pretrained": "timm:vit_base_patch14_reg4_dinov2.lvd142m",
                  "model_options": {"init_values": 1e-5}, "n_masks": 32, "batch_size": 64, "lr": 1e-5,
                  "weight_decay": 1e-5, "steps": 10_000, "max_epochs": 100, "init": None, "eval_every": 500},
    },
}
