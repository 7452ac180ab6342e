"""The CAM family of the grad-cam package (pytorch_grad_cam, MIT), registered as `gradcam.<Name>` from one table.

Optional: `pip install 'xaibench[cam]'`. Each row of CAM_TABLE names a pytorch_grad_cam class; one generic class
makes its call for the target classes on the explained output (`output`: 'prob', the target probability, as
every xaibench method by default, or 'logit'). The layer: the tokens entering a ViT's last block (the output of
the block before it; class and register tokens dropped, reshaped to the g x g patch grid: one cell per patch); a
timm ResNet's deepest stage whose map is at least half the patch grid's side; another CNN's last Conv2d; or
`layer` (any module name). The map is the library's (ReLU, min-max scaled per image) at the layer's resolution, then
bilinearly upsampled to the pixels and summed over each patch where the layer is not the patch grid.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.errors import XaibenchError
from xaibench.registry import register_method

from .base import Explainer
from .captum_family import OUTPUTS, _no_inplace
from .optional import not_suited, require, summary

PACKAGE = "pytorch_grad_cam"


@dataclass(frozen=True)
class CamRow:
    """One pytorch_grad_cam class, registered as `gradcam.<name>` with options `layer`, `output` and `options`."""

    name: str  # the pytorch_grad_cam class
    summary: str  # one line: `xaibench list methods` shows it
    options: dict[str, Any] = field(default_factory=dict)  # the class's keywords (after model, layers) -> default
    gradients: bool = True  # the class backpropagates (else it runs under torch.no_grad)

    @property
    def registered_name(self) -> str:
        return f"gradcam.{self.name}"

    def signature(self) -> inspect.Signature:
        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters = [inspect.Parameter("model", keyword), inspect.Parameter("layer", keyword, default=None),
                      inspect.Parameter("output", keyword, default="prob")]
        parameters += [inspect.Parameter(option, keyword, default=default) for option, default in self.options.items()]
        return inspect.Signature(parameters)


CAM_TABLE: tuple[CamRow, ...] = (
    CamRow("GradCAMPlusPlus", "Grad-CAM++ (Chattopadhay et al. 2018): channels weighted by positive gradients with "
           "second-order terms."),
    CamRow("ScoreCAM", "Score-CAM (Wang et al. 2020): channels weighted by a softmax over channels of the target "
           "output on the image times each scaled map.", dict(batch_size=64), gradients=False),
    CamRow("AblationCAM", "Ablation-CAM (Desai & Ramaswamy 2020): channels weighted by the output's drop when each "
           "is zeroed.", dict(batch_size=64, ratio_channels_to_ablate=1.0), gradients=False),
    CamRow("EigenCAM", "Eigen-CAM (Muhammad & Yeasin 2020): first principal component of the layer's activations "
           "(class-agnostic).", gradients=False),
    CamRow("LayerCAM", "Layer-CAM (Jiang et al. 2021): activations times positive gradients, position by position."),
)


def _is_vit(model: nn.Module) -> bool:
    encoder = getattr(model, "encoder", None)
    return encoder is not None and hasattr(encoder, "blocks") and hasattr(encoder, "num_prefix_tokens")


def find_cam_layer(model: nn.Module, layer: str | None, method: str) -> nn.Module:
    """The module whose output the CAM reads (see the module docstring)."""
    if layer is not None:
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise XaibenchError(f"method {method!r}: model {type(model).__name__} has no module {layer!r}") from None
    if _is_vit(model):  # the tokens entering the last block (as captum.LayerGradCam), read at the block before
        encoder = model.encoder
        return encoder.blocks[-2] if len(encoder.blocks) > 1 else encoder.norm_pre
    net = getattr(model, "net", None)
    stages = [info for info in getattr(net, "feature_info", [])
              if info.get("reduction", 0) > 1 and info.get("module", "").startswith("layer")]
    fitting = [info for info in stages if 2 * -(-model.img_size // info["reduction"]) >= model.grid_size]
    if fitting:
        return net.get_submodule(fitting[-1]["module"])
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if getattr(model, "family", None) == "cnn" and convolutions:
        return convolutions[-1]
    raise not_suited(f"{method} cannot find a layer in {type(model).__name__}; pass layer='<module name>'")


def tokens_to_grid(tokens: torch.Tensor, grid_size: int) -> torch.Tensor:
    """[B, prefix + g*g, D] tokens -> [B, D, g, g] map of the patch tokens (prefix tokens dropped); else as is."""
    if tokens.ndim != 3:
        return tokens
    b, t, d = tokens.shape
    patches = tokens[:, t - grid_size * grid_size:]
    return patches.transpose(1, 2).reshape(b, d, grid_size, grid_size)


def _layer_size(cam: Any, input_tensor: torch.Tensor) -> tuple[int, int]:
    """The CAM's size: the layer's own (the library's default, the image's, would resize with OpenCV)."""
    activation = cam.activations_and_grads.activations[-1]
    return int(activation.shape[-1]), int(activation.shape[-2])


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Score-CAM and Ablation-CAM draw a tqdm bar per image: silence it in those modules for the call."""
    from pytorch_grad_cam import ablation_cam, score_cam

    modules = [score_cam, ablation_cam]
    originals = [module.tqdm for module in modules]
    for module, original in zip(modules, originals):
        module.tqdm = types.SimpleNamespace(tqdm=functools.partial(original.tqdm, disable=True))
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.tqdm = original


class CamExplainer(Explainer):
    """Base of the table-built grad-cam explainers: the row's class on the explained output at `self.layer`."""

    row: ClassVar[CamRow]
    families = ("vit", "cnn")
    any_family_option = "layer"

    def __init__(self, *args: Any, **kwargs: Any):
        try:
            bound = self.row.signature().bind(*args, **kwargs)
        except TypeError as error:
            valid = ", ".join(list(self.row.signature().parameters)[1:])
            raise XaibenchError(f"method {self.name!r}: {error}; valid options: {valid}") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        super().__init__(values.pop("model"))
        require(self.name, PACKAGE)
        import pytorch_grad_cam

        self.library = pytorch_grad_cam
        self.layer = find_cam_layer(self.model, values.pop("layer"), self.name)
        self.output = values.pop("output")
        if self.output not in OUTPUTS:
            raise XaibenchError(f"method {self.name!r}: output must be one of {', '.join(OUTPUTS)}, "
                                f"got {self.output!r}")
        self.probes = (self.layer,)
        self.options = values
        self.needs_gradients = self.row.gradients

    def _cam(self) -> Any:
        library, grid = self.library, self.model.grid_size
        cls = getattr(library, self.row.name)
        sized = type(cls.__name__, (cls,), {"get_target_width_height": _layer_size})
        accepted = inspect.signature(cls.__init__).parameters
        keywords = {option: value for option, value in self.options.items() if option in accepted}
        if self.row.name == "AblationCAM" and _is_vit(self.model):
            from pytorch_grad_cam.ablation_layer import AblationLayerVit

            keywords["ablation_layer"] = AblationLayerVit()
        cam = sized(model=self.model, target_layers=[self.layer],
                    reshape_transform=functools.partial(tokens_to_grid, grid_size=grid), **keywords)
        for option, value in self.options.items():  # Score-CAM reads its batch size as an attribute
            if option not in accepted:
                setattr(cam, option, value)
        return cam

    def attribute(self, inputs, target, generator=None):
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

        output_target = ClassifierOutputSoftmaxTarget if self.output == "prob" else ClassifierOutputTarget
        chosen = [output_target(int(t)) for t in target.tolist()]
        with _no_inplace(self.model), _quiet_progress(), self._cam() as cam:
            maps = torch.as_tensor(cam(input_tensor=inputs, targets=chosen), device=inputs.device).float()
        self.model.zero_grad(set_to_none=True)  # the library's loss.backward() fills the parameters' .grad
        g = self.model.grid_size
        if maps.shape[-2:] == (g, g):
            return maps.reshape(inputs.shape[0], g * g)
        side = inputs.shape[-1]
        return self.to_patches(F.interpolate(maps[:, None], size=(side, side), mode="bilinear",
                                             align_corners=False)[:, 0])


def register_cam_row(row: CamRow) -> type[CamExplainer]:
    """Build and register the explainer class of one row as `gradcam.<name>`."""
    attributes = dict(__doc__=summary(row.summary, PACKAGE), __module__=__name__, __signature__=row.signature(),
                      row=row)
    return register_method(row.registered_name, type(f"{row.name}Explainer", (CamExplainer,), attributes))


CAM_EXPLAINERS: dict[str, type[CamExplainer]] = {row.registered_name: register_cam_row(row) for row in CAM_TABLE}
