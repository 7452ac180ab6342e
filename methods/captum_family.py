"""Captum's attribution methods as xaibench explainers, registered as `captum.<Name>` from one table.

Each row of CAPTUM_TABLE names a captum.attr class, its kind and its options; three generic classes (pixel:
gradient methods, their map summed over channels and then over each patch; patch: perturbation methods that
remove whole patches through the model's own masking; layer: Grad-CAM) make its one Captum call.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

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


# -- one row per registered method -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptumRow:
    """One Captum method: registered as `captum.<name>`, built as a `KINDS[kind]` explainer.

    The Captum call it makes is `captum.attr.<algorithm>(forward, **construct(e)).attribute(input, target=target,
    **kind's keywords, **arguments(e, input, generator))`, where `e` is the explainer (its options are attributes).
    """

    name: str  # registered as "captum.<name>"
    kind: str  # "pixel" (gradient family), "patch" (perturbation family) or "layer" (layer attribution)
    summary: str  # one line: `xaibench list methods` shows it
    options: dict[str, Any] = field(default_factory=dict)  # option -> default, after `output`
    algorithm: str = ""  # the captum.attr class (default: name)
    construct: Callable[[Any], dict[str, Any]] | None = None  # the class's keywords besides the forward function
    arguments: Callable[[Any, torch.Tensor, Any], dict[str, Any]] | None = None  # attribute's extra keywords
    absolute: bool = False  # pixel kind: sum |a| (a magnitude method) instead of the signed a
    module_forward: bool = False  # Captum hooks the modules: forward is an nn.Module, inplace activations off
    noise_tunnel: bool = False  # wrap the algorithm in captum's NoiseTunnel
    grid_features: bool = False  # patch kind: the presence input is a g x g grid (sliding windows)
    prepare: Callable[[Any], None] | None = None  # checks or resolves the options at construction
    families: tuple[str, ...] | None = None  # the model families it suits (None: any)
    any_family_option: str | None = None  # an option that, given, makes it suit any family

    @property
    def registered_name(self) -> str:
        return f"captum.{self.name}"

    def signature(self) -> inspect.Signature:
        """(model, output='prob', <options with their defaults>): what create_method checks options against."""
        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters = [inspect.Parameter("model", keyword), inspect.Parameter("output", keyword, default="prob")]
        parameters += [inspect.Parameter(option, keyword, default=default) for option, default in self.options.items()]
        return inspect.Signature(parameters)


class CaptumExplainer(Explainer):
    """Base of the table-built Captum explainers: the explained output (`output`: 'prob' = forward_fn, 'logit' =
    the model's logits), the row's options as attributes, and the row's one Captum call."""

    row: ClassVar[CaptumRow]

    def __init__(self, *args: Any, **kwargs: Any):
        signature = self.row.signature()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            valid = ", ".join(list(signature.parameters)[1:])
            raise XaibenchError(f"method {self.name!r}: {error}; valid options: {valid}") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        super().__init__(values.pop("model"))
        if values["output"] not in OUTPUTS:
            raise XaibenchError(f"method {self.name!r}: output must be one of {', '.join(OUTPUTS)}, "
                                f"got {values['output']!r}")
        for option, value in values.items():
            setattr(self, option, value)
        if self.row.prepare is not None:
            self.row.prepare(self)

    def score(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[R, num_classes] probabilities (or logits) of x [R, C, H, W] with the patches outside keep_mask removed."""
        if self.output == "logit":
            return self.model(x, keep_mask)
        return self.model.forward_fn(x, keep_mask)

    def presence_score(self, presence: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The score of x with the patches whose presence is <= 0.5 removed (the perturbation family's forward)."""
        keep_mask = presence.reshape(presence.shape[0], -1) > 0.5
        return self.score(x, keep_mask)

    def captum_call(self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None,
                    forward: Callable[..., torch.Tensor], **keywords: Any) -> torch.Tensor:
        """The row's Captum call on `inputs` with the kind's `keywords` (not a hook: every row goes through it)."""
        row, captum = self.row, _captum()
        keywords.update(row.arguments(self, inputs, generator) if row.arguments else {})
        with _no_inplace(self.model) if row.module_forward else contextlib.nullcontext():
            if row.module_forward:
                forward = _ScoreNet(self)
            algorithm = getattr(captum, row.algorithm or row.name)(forward, **(row.construct(self) if row.construct
                                                                               else {}))
            if row.noise_tunnel:
                algorithm = captum.NoiseTunnel(algorithm)
            return algorithm.attribute(inputs, target=target, **keywords)


class _ScoreNet(nn.Module):
    """The explained output as an nn.Module (DeepLift and GuidedBackprop hook the modules of a Module)."""

    def __init__(self, explainer: CaptumExplainer):
        super().__init__()
        self.model = explainer.model
        self._score = explainer.score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._score(x)


class PixelCaptumExplainer(CaptumExplainer):
    """Gradient family: Captum attributes the pixels [B, C, H, W]; the map is summed over channels (|a| where the
    row is `absolute`), then over each patch."""

    def attribute(self, inputs, target, generator=None):
        with seeded_global_rng(generator, inputs.device), _quiet():
            x = inputs.detach().clone().requires_grad_(True)
            pixels = self.captum_call(x, target, generator, self.score)
            return self.to_patches((pixels.abs() if self.row.absolute else pixels).sum(dim=1))


class PatchCaptumExplainer(CaptumExplainer):
    """Perturbation family: Captum perturbs a presence input [B, n] of ones (baseline zeros).

    The forward turns presence into keep_mask (present > 0.5), so a perturbed patch is removed exactly as the
    metrics remove it: the mask token for ViT/OFA, the baseline fill for ResNet. One feature = one patch.
    """

    needs_gradients = False

    def attribute(self, inputs, target, generator=None):
        with seeded_global_rng(generator, inputs.device), _quiet():
            batch, n, g = inputs.shape[0], self.model.n_patches, self.model.grid_size
            presence = torch.ones(batch, n, device=inputs.device)
            if self.row.grid_features:
                presence = presence.reshape(-1, g, g)
            scores = self.captum_call(presence, target, generator, self.presence_score, baselines=0.0,
                                      additional_forward_args=(inputs,),
                                      perturbations_per_eval=self.perturbations_per_eval)
            return scores.reshape(batch, n)


class _TokenGrid(nn.Module):
    """Identity on patch tokens [B, n, D], seen as a feature map [B, D, g, g] so Grad-CAM can weight channels."""

    def __init__(self, grid_size: int):
        super().__init__()
        self.grid_size = grid_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, d = patches.shape
        return patches.transpose(1, 2).reshape(b, d, self.grid_size, self.grid_size)


class LayerCaptumExplainer(CaptumExplainer):
    """Layer family: Captum attributes the output [B, 1, h, w] of `self.layer` (set by the row's `prepare`).

    With `self.token_grid` (a ViT) the layer is the patch tokens entering the last block seen as a g x g map,
    one cell per patch; otherwise the map is upsampled bilinearly to the pixels and summed over each patch.
    """

    token_grid: _TokenGrid | None = None

    def attribute(self, inputs, target, generator=None):
        with seeded_global_rng(generator, inputs.device), _quiet():
            handle = self._route_tokens_through_grid() if self.token_grid is not None else None
            try:
                cam = self.captum_call(inputs, target, generator, self.score)  # [B, 1, h, w]
            finally:
                if handle is not None:
                    handle.remove()
            if self.token_grid is not None:
                return cam.reshape(inputs.shape[0], self.model.n_patches)  # one cell per patch
            side = inputs.shape[-1]
            pixels = _captum().LayerAttribution.interpolate(cam, (side, side), interpolate_mode="bilinear")
            return self.to_patches(pixels[:, 0])  # the pixel map [B, H, W] summed over each patch

    def _route_tokens_through_grid(self) -> Any:
        """A pre-hook on the last block that passes its patch tokens through the token grid (removed by the caller)."""
        encoder, grid = self.model.encoder, self.token_grid
        prefix = encoder.num_prefix_tokens

        def through_grid(module, args):
            tokens = args[0]
            patches = grid(tokens[:, prefix:]).flatten(2).transpose(1, 2)
            return (torch.cat([tokens[:, :prefix], patches], dim=1), *args[1:])

        return encoder.blocks[-1].register_forward_pre_hook(through_grid)


KINDS: dict[str, type[CaptumExplainer]] = {"pixel": PixelCaptumExplainer, "patch": PatchCaptumExplainer,
                                           "layer": LayerCaptumExplainer}


# -- what the rows compute besides the common call --------------------------------------------------------------


def _gradient_shap_arguments(e: Any, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
    """Baselines: a black image plus n_baselines - 1 uniform-noise images in the batch's range (from generator)."""
    low, high = x.detach().amin(), x.detach().amax()
    noise = uniform((max(e.n_baselines - 1, 0), *x.shape[1:]), generator, x.device)
    baselines = torch.cat([torch.zeros_like(x[:1]), low + (high - low) * noise])
    return dict(baselines=baselines, n_samples=e.n_samples, stdevs=float(e.stdev_spread * (high - low)))


def _smoothgrad_arguments(e: Any, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
    spread = float(e.stdev_spread * (x.detach().amax() - x.detach().amin()))
    return dict(nt_type="smoothgrad", nt_samples=e.n_samples, nt_samples_batch_size=e.batch_size, stdevs=spread,
                abs=True)


def _ridge(e: Any) -> dict[str, Any]:
    from captum._utils.models.linear_model import SkLearnRidge

    return dict(interpretable_model=SkLearnRidge(alpha=e.alpha))


def _check_window(e: Any) -> None:
    if not 1 <= e.window <= e.model.grid_size:
        raise XaibenchError(f"method 'captum.Occlusion': window must be 1..{e.model.grid_size} patches, got {e.window}")


def _find_layer(e: Any) -> None:
    """Grad-CAM's layer: `layer` by name; else a ViT's tokens entering the last block; else a ResNet's `layer4`;
    else (a CNN-family model) its last Conv2d."""
    model, encoder = e.model, getattr(e.model, "encoder", None)
    if e.layer is not None:
        try:
            e.layer = model.get_submodule(e.layer)
        except AttributeError:
            raise XaibenchError(f"method 'captum.LayerGradCam': model {type(model).__name__} has no module "
                                f"{e.layer!r}") from None
    elif encoder is not None and hasattr(encoder, "blocks") and hasattr(encoder, "num_prefix_tokens"):
        # The last block's *input*: for a class-token head the last block's patch outputs get no gradient.
        e.token_grid = _TokenGrid(model.grid_size)
        e.layer = e.token_grid
    else:
        stages = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "layer4"]
        convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if stages:
            e.layer = stages[-1]
        elif getattr(model, "family", None) == "cnn" and convolutions:
            e.layer = convolutions[-1]
        else:
            raise XaibenchError(f"method 'captum.LayerGradCam' cannot find a layer in {type(model).__name__}; "
                                f"pass layer='<module name>'")
    e.probes = (e.layer,)


PPE = 16  # perturbations_per_eval: perturbed copies per forward call of the perturbation family

# One row per registered `captum.<name>`: its kind, its one-line summary, its options with their defaults, and
# what its Captum call adds to the kind's common call.
CAPTUM_TABLE: tuple[CaptumRow, ...] = (
    # -- gradient methods: pixels -> [B, H, W] map -> summed over each patch
    CaptumRow("IntegratedGradients", "pixel", "Integrated gradients from a constant `baseline` image (n_steps "
              "points); signed pixel sums per patch.",
              dict(n_steps=16, baseline=0.0, method="gausslegendre", internal_batch_size=None),
              arguments=lambda e, x, g: dict(baselines=e.baseline, n_steps=e.n_steps, method=e.method,
                                             internal_batch_size=e.internal_batch_size)),
    CaptumRow("Saliency", "pixel", "Saliency: |gradient| of the target output w.r.t. the pixels, summed over "
              "channels and each patch.", absolute=True, arguments=lambda e, x, g: dict(abs=True)),
    CaptumRow("InputXGradient", "pixel", "Input x gradient; signed pixel values summed over channels and each patch."),
    CaptumRow("GuidedBackprop", "pixel", "Guided backprop (ReLU gradients clamped); |map| summed per patch. Equals "
              "|grad| on GELU models (ViT, OFA).", absolute=True, module_forward=True),
    CaptumRow("DeepLift", "pixel", "DeepLIFT (rescale rule) from a constant `baseline` image; signed pixel sums per "
              "patch. Meant for ReLU nets.", dict(baseline=0.0, eps=1e-10), module_forward=True,
              construct=lambda e: dict(eps=e.eps), arguments=lambda e, x, g: dict(baselines=e.baseline)),
    CaptumRow("GradientShap", "pixel", "GradientSHAP: gradients at random points between the image and baselines "
              "(a black image plus noise images).", dict(n_samples=8, n_baselines=4, stdev_spread=0.1),
              arguments=_gradient_shap_arguments),
    CaptumRow("SmoothGrad", "pixel", "SmoothGrad = NoiseTunnel(Saliency): |gradient| averaged over noisy copies "
              "(sd = stdev_spread x range).", dict(n_samples=8, stdev_spread=0.15, batch_size=None),
              algorithm="Saliency", noise_tunnel=True, absolute=True, arguments=_smoothgrad_arguments),
    # -- perturbation methods: a [B, n] presence vector; 0 = the patch is removed by the model's own masking
    CaptumRow("Occlusion", "patch", "Occlusion of window x window patches sliding by `stride` patches; a patch "
              "gets the mean drop of its windows.", dict(window=2, stride=1, perturbations_per_eval=PPE),
              grid_features=True, prepare=_check_window,
              arguments=lambda e, x, g: dict(sliding_window_shapes=(e.window, e.window), strides=(e.stride, e.stride))),
    CaptumRow("FeatureAblation", "patch", "Feature ablation: drop in the target output when one patch is removed "
              "(n forwards per image).", dict(perturbations_per_eval=PPE)),
    CaptumRow("ShapleyValueSampling", "patch", "Shapley value sampling over patches: `n_samples` random "
              "permutations (about n_samples x n forwards).", dict(n_samples=4, perturbations_per_eval=PPE),
              arguments=lambda e, x, g: dict(n_samples=e.n_samples)),
    CaptumRow("KernelShap", "patch", "Kernel SHAP over patches: a weighted linear fit to `n_samples` random patch "
              "coalitions per image.", dict(n_samples=64, perturbations_per_eval=PPE),
              arguments=lambda e, x, g: dict(n_samples=e.n_samples)),
    CaptumRow("Lime", "patch", "LIME over patches: ridge fit (alpha) to `n_samples` random coalitions, "
              "cosine-kernel weighted.", dict(n_samples=64, alpha=1.0, perturbations_per_eval=PPE),
              construct=_ridge, arguments=lambda e, x, g: dict(n_samples=e.n_samples)),
    # -- Grad-CAM
    CaptumRow("LayerGradCam", "layer", "Grad-CAM: ViT tokens entering the last block as a g x g map; ResNet's last "
              "stage, upsampled and summed per patch.", dict(layer=None, relu=True), prepare=_find_layer,
              construct=lambda e: dict(layer=e.layer), arguments=lambda e, x, g: dict(relu_attributions=e.relu),
              families=("vit", "cnn"), any_family_option="layer"),
)


def register_captum_row(row: CaptumRow) -> type[CaptumExplainer]:
    """Build the explainer class of one row (its kind's class with the row, summary and signature attached) and
    register it as `captum.<name>`: how every row of CAPTUM_TABLE is registered, and how a plugin adds one."""
    if row.kind not in KINDS:
        raise XaibenchError(f"Captum row {row.name!r}: kind must be one of {', '.join(KINDS)}, got {row.kind!r}")
    attributes = dict(__doc__=row.summary, __module__=__name__, __signature__=row.signature(), row=row,
                      families=row.families, any_family_option=row.any_family_option)
    return register_method(row.registered_name, type(f"{row.name}Explainer", (KINDS[row.kind],), attributes))


CAPTUM_EXPLAINERS: dict[str, type[CaptumExplainer]] = {row.registered_name: register_captum_row(row)
                                                       for row in CAPTUM_TABLE}
