"""ROAD (Rong et al. 2022): MoRF and LeRF curves of the target probability with the removed patches' pixels filled by
the noisy linear imputer, the network seeing the imputed image with every patch kept, as a pure function and class.
"""
from __future__ import annotations

import torch

from xaibench.registry import register_metric

from .curves import ForwardFn, Steps
from .pixel_flipping import srg
from .removal import check_removal_options, with_removal
from .result import MetricResult
from .stateful import Metric


def road(forward_fn: ForwardFn, inputs: torch.Tensor, attributions: torch.Tensor, targets: torch.Tensor, *,
         steps: Steps = None, noise: float = 0.01, batch_size: int = 256, generator: torch.Generator | None = None,
         autocast: bool | None = None) -> MetricResult:
    """ROAD, "RemOve And Debias" (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A consistent and efficient
    evaluation strategy for attribution methods", ICML), per image, with patches as the removal unit.

    At k patches removed (x_k = k/n), MoRF removes the k most relevant patches, LeRF the k least relevant; the
    removed pixels are imputed by ROAD's noisy linear imputer (metrics/removal.py: each removed pixel the weighted
    mean of its 8 neighbours, 1/6 direct and 1/12 diagonal, one linear system per image and channel solved on the
    device by conjugate gradient, plus N(0, noise^2)) and the network sees the imputed image with every patch kept:
    y_k = f(impute(x, removed_k))_t, the target probability. The imputer is ROAD's answer to the class information
    that the shape of a removed region leaks. Scores [B]:

        road_morf = AUC of the MoRF curve (lower is better), road_lerf = AUC of the LeRF curve (higher is better),
        road = road_lerf - road_morf (higher is better; the main score).

    road is SRG's AUC(LIF) - AUC(MIF) with the ROAD imputer as the removal (Rong et al. report both curves; their
    difference, like pytorch-grad-cam's ROADCombined = (LeRF - MoRF) / 2, rewards both at once and cancels what
    the imputation alone does to the probability). Ties in the attribution are broken at random by `generator`.
    Where the paper reports accuracy at a few fractions (10%..90%), this scores the probability at every step.
    steps: None (default) = every k = 0..n, the curve of srg/insertion/deletion, so the scores compare with theirs
    (int K = K evenly spaced k including 0 and n; a list = those k). At k = n every pixel is removed and the system
    has no anchor: the image is 0 plus the noise (the minimum-norm solution; see linear_imputation).
    noise: std of the imputation noise in the model's input units; default 0.01, ROAD's (NoisyLinearImputer) and
    Quantus' default. Its draws come from `generator` (one key, drawn first; counter-based per row, so a score does
    not depend on batch_size or on the other images). batch_size: forward rows per call (each call's rows are
    imputed together). autocast: None = bf16 on CUDA only (the imputation itself runs in float64).
    Cost: 2K - 2 forward inputs per image (the end points shared) and as many imputations (conjugate gradient,
    about the removed region's diameter in iterations). Curves: road_morf, road_lerf [B, K].
    """
    imputing = with_removal(forward_fn, "road", generator=generator, noise=noise)
    result = srg(imputing, inputs, attributions, targets, steps=steps, batch_size=batch_size, generator=generator,
                 random_baseline=False, autocast=autocast)
    morf, lerf = result.scores["deletion"], result.scores["insertion"]
    return MetricResult({"road": lerf - morf, "road_morf": morf, "road_lerf": lerf},
                        {"road_morf": result.curves["mif"], "road_lerf": result.curves["lif"]}, result.x,
                        result.n_forward)


@register_metric("road")
class Road(Metric):
    """ROAD (Rong et al. 2022): road = AUC(LeRF) - AUC(MoRF), the removed pixels imputed by the noisy linear
    imputer; also road_morf (lower is better) and road_lerf."""

    main_score = "road"
    score_names = ("road", "road_morf", "road_lerf")
    directions = {"road_morf": False}

    def __init__(self, steps: Steps = None, noise: float = 0.01, batch_size: int = 256,
                 autocast: bool | None = None) -> None:
        super().__init__()
        check_removal_options("road", {"noise": noise})
        self.steps = steps
        self.noise = noise
        self.batch_size = batch_size
        self.autocast = autocast

    def evaluate(self, forward_fn, inputs, attributions, targets, ground_truth=None, generator=None) -> MetricResult:
        return road(forward_fn, inputs, attributions, targets, steps=self.steps, noise=self.noise,
                    batch_size=self.batch_size, generator=generator, autocast=self.autocast)
