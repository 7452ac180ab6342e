"""Captum's attribution methods as xaibench explainers, registered as `captum.<Name>` (thin wrappers).

Gradient methods attribute the pixels of the target-class probability; their map is summed over channels
and then over each patch. Perturbation methods perturb whole patches through the model's own masking.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method
from xaibench.sampling import uniform

from .base import Explainer, seeded_global_rng

OUTPUTS = ("prob", "logit")

# Benign notices Captum prints on every call; they would drown a benchmark's log.
_QUIET = (
    r".*did not already require gradients.*",
    r"Setting backward hooks on ReLU activations.*",
    r"You are providing multiple inputs for Lime.*",
    r".*backward hooks.*",
)


def _captum():
    """Import captum.attr lazily: `import xaibench.methods` (and `xaibench list`) stays fast."""
    import captum.attr

    return captum.attr


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        yield


@contextlib.contextmanager
def _no_inplace(model: nn.Module) -> Iterator[None]:
    """Turn off `inplace` activations while Captum's module hooks run (timm's ResNet uses ReLU(inplace=True))."""
    flipped = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for module in flipped:
        module.inplace = False
    try:
        yield
    finally:
        for module in flipped:
            module.inplace = True


class CaptumExplainer(Explainer):
    """Shared part: the model's output that is explained (`output`: 'prob' = forward_fn, 'logit' = model)."""

    def __init__(self, model: nn.Module, output: str = "prob"):
        super().__init__(model)
        if output not in OUTPUTS:
            raise XaibenchError(f"method {self.name!r}: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.output = output

    def score(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[R, num_classes] probabilities (or logits) of x [R, C, H, W] with the patches outside keep_mask removed."""
        if self.output == "logit":
            return self.model(x, keep_mask)
        return self.model.forward_fn(x, keep_mask)

    def attribute(self, inputs, targets, generator=None):
        with seeded_global_rng(generator, inputs.device), _quiet():
            return self.captum_attribute(inputs, targets, generator)

    def captum_attribute(self, inputs: torch.Tensor, targets: torch.Tensor,
                         generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


class _ScoreNet(nn.Module):
    """The explained output as an nn.Module (DeepLift and GuidedBackprop hook the modules of a Module)."""

    def __init__(self, explainer: CaptumExplainer):
        super().__init__()
        self.model = explainer.model
        self._score = explainer.score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._score(x)


# -- gradient methods: pixels -> [B, H, W] map -> summed over each patch ----------------------------------------


class PixelCaptumExplainer(CaptumExplainer):
    """Gradient family: Captum attributes the pixels [B, C, H, W]; the map is summed over channels.

    `absolute`: sum |a| (gradient magnitudes) rather than the signed a (methods with completeness).
    """

    absolute = False

    def captum_attribute(self, inputs, targets, generator):
        x = inputs.detach().clone().requires_grad_(True)
        pixels = self.pixel_attributions(x, targets, generator)
        return (pixels.abs() if self.absolute else pixels).sum(dim=1)

    def pixel_attributions(self, x: torch.Tensor, targets: torch.Tensor,
                           generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@register_method("captum.IntegratedGradients")
class IntegratedGradientsExplainer(PixelCaptumExplainer):
    """Integrated gradients from a constant `baseline` image (n_steps points); signed pixel sums per patch."""

    def __init__(self, model, output="prob", n_steps: int = 16, baseline: float = 0.0,
                 method: str = "gausslegendre", internal_batch_size: int | None = None):
        super().__init__(model, output)
        self.n_steps, self.baseline, self.method, self.internal_batch_size = n_steps, baseline, method, internal_batch_size

    def pixel_attributions(self, x, targets, generator):
        return _captum().IntegratedGradients(self.score).attribute(
            x, baselines=self.baseline, target=targets, n_steps=self.n_steps, method=self.method,
            internal_batch_size=self.internal_batch_size)


@register_method("captum.Saliency")
class SaliencyExplainer(PixelCaptumExplainer):
    """Saliency: |gradient| of the target output w.r.t. the pixels, summed over channels and each patch."""

    absolute = True

    def pixel_attributions(self, x, targets, generator):
        return _captum().Saliency(self.score).attribute(x, target=targets, abs=True)


@register_method("captum.InputXGradient")
class InputXGradientExplainer(PixelCaptumExplainer):
    """Input x gradient; signed pixel values summed over channels and each patch."""

    def pixel_attributions(self, x, targets, generator):
        return _captum().InputXGradient(self.score).attribute(x, target=targets)


@register_method("captum.GuidedBackprop")
class GuidedBackpropExplainer(PixelCaptumExplainer):
    """Guided backprop (ReLU gradients clamped); |map| summed per patch. Equals |grad| on GELU models (ViT, OFA)."""

    absolute = True

    def pixel_attributions(self, x, targets, generator):
        with _no_inplace(self.model):
            return _captum().GuidedBackprop(_ScoreNet(self)).attribute(x, target=targets)


@register_method("captum.DeepLift")
class DeepLiftExplainer(PixelCaptumExplainer):
    """DeepLIFT (rescale rule) from a constant `baseline` image; signed pixel sums per patch. Meant for ReLU nets."""

    def __init__(self, model, output="prob", baseline: float = 0.0, eps: float = 1e-10):
        super().__init__(model, output)
        self.baseline, self.eps = baseline, eps

    def pixel_attributions(self, x, targets, generator):
        with _no_inplace(self.model):
            return _captum().DeepLift(_ScoreNet(self), eps=self.eps).attribute(
                x, baselines=self.baseline, target=targets)


@register_method("captum.GradientShap")
class GradientShapExplainer(PixelCaptumExplainer):
    """GradientSHAP: gradients at random points between the image and baselines (a black image plus noise images)."""

    def __init__(self, model, output="prob", n_samples: int = 8, n_baselines: int = 4, stdev_spread: float = 0.1):
        super().__init__(model, output)
        self.n_samples, self.n_baselines, self.stdev_spread = n_samples, n_baselines, stdev_spread

    def pixel_attributions(self, x, targets, generator):
        low, high = x.detach().amin(), x.detach().amax()
        noise = uniform((max(self.n_baselines - 1, 0), *x.shape[1:]), generator, x.device)
        baselines = torch.cat([torch.zeros_like(x[:1]), low + (high - low) * noise])
        return _captum().GradientShap(self.score).attribute(
            x, baselines=baselines, n_samples=self.n_samples,
            stdevs=float(self.stdev_spread * (high - low)), target=targets)


@register_method("captum.SmoothGrad")
class SmoothGradExplainer(PixelCaptumExplainer):
    """SmoothGrad = NoiseTunnel(Saliency): |gradient| averaged over noisy copies (sd = stdev_spread x range)."""

    absolute = True

    def __init__(self, model, output="prob", n_samples: int = 8, stdev_spread: float = 0.15,
                 batch_size: int | None = None):
        super().__init__(model, output)
        self.n_samples, self.stdev_spread, self.batch_size = n_samples, stdev_spread, batch_size

    def pixel_attributions(self, x, targets, generator):
        captum = _captum()
        spread = float(self.stdev_spread * (x.detach().amax() - x.detach().amin()))
        return captum.NoiseTunnel(captum.Saliency(self.score)).attribute(
            x, nt_type="smoothgrad", nt_samples=self.n_samples, nt_samples_batch_size=self.batch_size,
            stdevs=spread, target=targets, abs=True)


# -- perturbation methods: a [B, n] presence vector; 0 = the patch is removed by the model's own masking -------


class PatchCaptumExplainer(CaptumExplainer):
    """Perturbation family: Captum perturbs a presence input [B, n] of ones (baseline zeros).

    The forward turns presence into keep_mask (present > 0.5), so a perturbed patch is removed exactly as the
    metrics remove it: the mask token for ViT/OFA, the baseline fill for ResNet. One feature = one patch.
    """

    needs_gradients = False

    def __init__(self, model, output="prob", perturbations_per_eval: int = 16):
        super().__init__(model, output)
        self.perturbations_per_eval = perturbations_per_eval

    def presence_score(self, presence: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        keep_mask = presence.reshape(presence.shape[0], -1) > 0.5
        return self.score(x, keep_mask)

    def captum_attribute(self, inputs, targets, generator):
        presence = torch.ones(inputs.shape[0], self.model.n_patches, device=inputs.device)
        scores = self.perturb(presence, inputs, targets)
        return scores.reshape(inputs.shape[0], self.model.n_patches)

    def perturb(self, presence: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_method("captum.Occlusion")
class OcclusionExplainer(PatchCaptumExplainer):
    """Occlusion of window x window patches sliding by `stride` patches; a patch gets the mean drop of its windows."""

    def __init__(self, model, output="prob", window: int = 2, stride: int = 1, perturbations_per_eval: int = 16):
        super().__init__(model, output, perturbations_per_eval)
        if not 1 <= window <= model.grid_size:
            raise XaibenchError(f"method 'captum.Occlusion': window must be 1..{model.grid_size} patches, got {window}")
        self.window, self.stride = window, stride

    def perturb(self, presence, inputs, targets):
        g = self.model.grid_size
        return _captum().Occlusion(self.presence_score).attribute(
            presence.reshape(-1, g, g), sliding_window_shapes=(self.window, self.window),
            strides=(self.stride, self.stride), baselines=0.0, target=targets, additional_forward_args=(inputs,),
            perturbations_per_eval=self.perturbations_per_eval)


@register_method("captum.FeatureAblation")
class FeatureAblationExplainer(PatchCaptumExplainer):
    """Feature ablation: drop in the target output when one patch is removed (n forwards per image)."""

    def perturb(self, presence, inputs, targets):
        return _captum().FeatureAblation(self.presence_score).attribute(
            presence, baselines=0.0, target=targets, additional_forward_args=(inputs,),
            perturbations_per_eval=self.perturbations_per_eval)


@register_method("captum.ShapleyValueSampling")
class ShapleyValueSamplingExplainer(PatchCaptumExplainer):
    """Shapley value sampling over patches: `n_samples` random permutations (about n_samples x n forwards)."""

    def __init__(self, model, output="prob", n_samples: int = 4, perturbations_per_eval: int = 16):
        super().__init__(model, output, perturbations_per_eval)
        self.n_samples = n_samples

    def perturb(self, presence, inputs, targets):
        return _captum().ShapleyValueSampling(self.presence_score).attribute(
            presence, baselines=0.0, target=targets, additional_forward_args=(inputs,), n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval)


@register_method("captum.KernelShap")
class KernelShapExplainer(PatchCaptumExplainer):
    """Kernel SHAP over patches: a weighted linear fit to `n_samples` random patch coalitions per image."""

    def __init__(self, model, output="prob", n_samples: int = 64, perturbations_per_eval: int = 16):
        super().__init__(model, output, perturbations_per_eval)
        self.n_samples = n_samples

    def perturb(self, presence, inputs, targets):
        return _captum().KernelShap(self.presence_score).attribute(
            presence, baselines=0.0, target=targets, additional_forward_args=(inputs,), n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval)


@register_method("captum.Lime")
class LimeExplainer(PatchCaptumExplainer):
    """LIME over patches: ridge fit (alpha) to `n_samples` random coalitions, cosine-kernel weighted."""

    def __init__(self, model, output="prob", n_samples: int = 64, alpha: float = 1.0, perturbations_per_eval: int = 16):
        super().__init__(model, output, perturbations_per_eval)
        self.n_samples, self.alpha = n_samples, alpha

    def perturb(self, presence, inputs, targets):
        from captum._utils.models.linear_model import SkLearnRidge

        return _captum().Lime(self.presence_score, interpretable_model=SkLearnRidge(alpha=self.alpha)).attribute(
            presence, baselines=0.0, target=targets, additional_forward_args=(inputs,), n_samples=self.n_samples,
            perturbations_per_eval=self.perturbations_per_eval)


# -- Grad-CAM -------------------------------------------------------------------------------------------------------


class _TokenGrid(nn.Module):
    """Identity on patch tokens [B, n, D], seen as a feature map [B, D, g, g] so Grad-CAM can weight channels."""

    def __init__(self, grid_size: int):
        super().__init__()
        self.grid_size = grid_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, d = patches.shape
        return patches.transpose(1, 2).reshape(b, d, self.grid_size, self.grid_size)


@register_method("captum.LayerGradCam")
class LayerGradCamExplainer(CaptumExplainer):
    """Grad-CAM: ViT tokens entering the last block as a g x g map; ResNet's last stage, upsampled and summed per patch.

    `layer` names another module (e.g. 'net.layer3') whose output is a [B, C, h, w] map. `relu` keeps the
    positive evidence only (as in the Grad-CAM paper).
    """

    def __init__(self, model, output="prob", layer: str | None = None, relu: bool = True):
        super().__init__(model, output)
        self.relu = relu
        self.token_grid: _TokenGrid | None = None
        encoder = getattr(model, "encoder", None)
        if layer is not None:
            try:
                self.layer = model.get_submodule(layer)
            except AttributeError:
                raise XaibenchError(f"method 'captum.LayerGradCam': model {type(model).__name__} has no module "
                                    f"{layer!r}") from None
        elif encoder is not None and hasattr(encoder, "blocks") and hasattr(encoder, "num_prefix_tokens"):
            # The last block's *input*: for a class-token head the last block's patch outputs get no gradient.
            self.token_grid = _TokenGrid(model.grid_size)
            self.layer = self.token_grid
        elif hasattr(getattr(model, "net", None), "layer4"):
            self.layer = model.net.layer4
        else:
            raise XaibenchError(f"method 'captum.LayerGradCam' cannot find a layer in {type(model).__name__}; "
                                f"pass layer='<module name>'")

    def probes(self):
        return (self.layer,)

    def captum_attribute(self, inputs, targets, generator):
        captum = _captum()
        handle = None
        if self.token_grid is not None:
            encoder, grid = self.model.encoder, self.token_grid
            prefix = encoder.num_prefix_tokens

            def through_grid(module, args):
                tokens = args[0]
                patches = grid(tokens[:, prefix:]).flatten(2).transpose(1, 2)
                return (torch.cat([tokens[:, :prefix], patches], dim=1), *args[1:])

            handle = encoder.blocks[-1].register_forward_pre_hook(through_grid)
        try:
            cam = captum.LayerGradCam(self.score, self.layer).attribute(
                inputs, target=targets, relu_attributions=self.relu)  # [B, 1, h, w]
        finally:
            if handle is not None:
                handle.remove()
        if self.token_grid is not None:
            return cam.reshape(inputs.shape[0], self.model.n_patches)  # one cell per patch
        side = inputs.shape[-1]
        pixels = captum.LayerAttribution.interpolate(cam, (side, side), interpolate_mode="bilinear")
        return pixels[:, 0]  # pixel map [B, H, W]; the base class sums it over each patch
