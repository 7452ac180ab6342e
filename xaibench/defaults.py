"""The defaults of `xaibench run`, all in one place: what the plain command does and how big it is.

`xaibench run` lays a --config file over DEFAULT_RUN (the file wins, key by key), then the command-line
flags, then --set. The plain command (no options) must finish in under 5 minutes on a 2-core CPU,
OFA training included: tune the numbers here, nowhere else.
"""
from __future__ import annotations

from typing import Any

DEFAULT_RUN: dict[str, Any] = {
    # What is run and how it is scored; keys of xaibench.runner.RunOptions.
    "run": {
        "methods": ["ofa", "grad", "attn"],
        "datasets": ["objects"],  # the model-truth set (xaibench/data/objects.py); "synthetic" is the lesion set
        "seeds": [0],
        "size": 28,  # image side; synthetic draws at any size, MedMNIST+ has 28/64/128/224
        "model": "ofa",  # the network every method explains and every metric queries (SPEC §4)
        "checkpoint": None,  # weights of a classifier to explain as it is (e.g. model "torchvision:resnet18")
        "target": "label",  # explained and scored class: "label" (ground truth) or "predicted"
        "n_test": 64,  # the first n_test test images are explained and scored
        "batch_size": 64,  # images per explain/metric call
        # plausibility only where the dataset has an annotated region; truth only where it re-renders its objects
        "metrics": ["srg", "rsrg", "plausibility", "truth"],
        "steps": 11,  # curve points K per MIF/LIF/R-SRG curve (k = 0..n evenly, rounded); "all" = every k
        "n_draws": 2,  # R-SRG draws per curve
        "metric_batch_size": "auto",  # masked inputs per forward_fn call in a metric: "auto" = 256 on the CPU, on
        # CUDA what half the free memory holds (at most 4096); an execution detail, not part of any cache key
        "n_figure_images": 6,  # test images in the attribution-map figure
        "sanity_images": 16,  # images of each method's cascading model-randomization check (0 = none)
        "sanity_data": False,  # also the data randomization test: OFA trained again on permuted labels
        "figures": True,
        "method_options": {},  # e.g. {"captum.Lime": {"n_samples": 128}}
        "metric_options": {},  # e.g. {"rsrg": {"eps": 1e-6}}; laid over the options built from the keys above
    },
    # TrainConfig options of the default run ([train] and [train.<model>] of a config file); empty = the
    # TrainConfig defaults, the CPU recipe of docs/training.md (300 Segm steps, then 500 OFA steps).
    "train": {},
    # Dataset options per dataset ([data.<name>] of a config file), e.g. {"synthetic": {"n_samples": 1000}}.
    "data": {},
}

#: A dataset's own training recipe, under the run's [train] options (which win key by key): the objects set is
#: learnt (test accuracy 1.000 on 3 seeds, benchmarks/gpu/objects_sweep.py) by far less than the TrainConfig
#: defaults, which the MedMNIST results (results/) keep. Sized so that the plain `xaibench run` stays under 3 min
#: on 2 CPU cores.
DATASET_TRAIN: dict[str, dict[str, Any]] = {
    "objects": {"init_steps": 100, "steps": 300, "n_masks": 2},
}

#: Whole test sets: `n_test = "all"` (any count at least the largest test split, 8,827 images in OrganSMNIST+).
ALL_IMAGES = 2**31 - 1

#: `--preset NAME`: a recipe laid over DEFAULT_RUN before the --config file, the flags and --set (which all win).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's setting (Sec. 3 of One For All; SPEC §3): ViT-B/16 at 224 px (196 patches) with 4 registers,
    # started from DINOv2 (timm's ViT-B/14 weights, patch embedding and position grid resampled to /16),
    # M = 32 masks, batch 64, AdamW lr 1e-5 and weight decay 1e-5, ~10k steps and at most 100 epochs, no
    # Segm warm start; every test image scored at every curve point, on the nine MedMNIST+ sets.
    "paper": {
        "run": {"methods": ["ofa", "grad", "attn"], "datasets": ["all"], "size": 224, "n_test": "all",
                "steps": "all", "batch_size": 64},
        "train": {"arch": "vit-b", "patch_size": 16, "pretrained": "timm:vit_base_patch14_reg4_dinov2.lvd142m",
                  "model_options": {"init_values": 1e-5}, "n_masks": 32, "batch_size": 64, "lr": 1e-5,
                  "weight_decay": 1e-5, "steps": 10_000, "max_epochs": 100, "init": None, "eval_every": 500},
    },
}
