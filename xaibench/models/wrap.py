"""Any image classifier as an xaibench model: a patch grid and a masked forward around an `nn.Module`.

`wrap_classifier(module, ...)` takes a user's network (plain torch, timm or torchvision) as it is;
`build_classifier(name, ...)` builds one by name (`torchvision:<name>`, `timm:<name>` or a registered
xaibench model) and loads its checkpoint.

Inputs arrive as xaibench scales them, (pixel / 255 - 0.5) / 0.5 in [-1, 1]. A removed patch is
filled in that scale first (fill "mean": `fill_value`, the training images' channel mean; "zero";
"blur": a local average; "token": the module's own mask token, swapped in after its patch
embedding). Then a grey image is repeated to the 3 channels of an RGB stem, and, where `mean` or
`std` is given, normalised as torchvision's `Normalize` does: (pixel in [0, 1] - mean) / std.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from xaibench.data.base import PIXEL_MEAN, PIXEL_STD
from xaibench.errors import XaibenchError
from xaibench.models.base import MaskedClassifier
from xaibench.models.pretrained import read_state_dict
from xaibench.registry import MODELS

FILLS = ("mean", "zero", "blur", "token")
FAMILIES = ("vit", "cnn", "other")
WRAPPER_OPTIONS = ("patch_size", "fill", "fill_value", "mean", "std", "family")
LIBRARIES = ("torchvision", "timm")


def _stem_channels(module: nn.Module, in_chans: int) -> int:
    first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    stem = first_conv.in_channels if first_conv is not None else in_chans
    if stem != in_chans and in_chans != 1:
        raise XaibenchError(f"the classifier's first convolution takes {stem} channels but the images have "
                            f"{in_chans}; only grey images are repeated to fit an RGB stem")
    return stem


def _channel_vector(value, length: int, what: str) -> torch.Tensor:
    vector = torch.as_tensor(value, dtype=torch.float32).flatten()
    if vector.numel() == 1:
        vector = vector.expand(length)
    if vector.numel() != length:
        raise XaibenchError(f"{what} must have 1 or {length} values (one per channel), got {vector.numel()}")
    return vector.clone()


class WrappedClassifier(MaskedClassifier):
    """An image classifier (`self.net`) evaluated under xaibench's masked-forward interface."""

    def __init__(self, module: nn.Module, *, img_size: int, in_chans: int, num_classes: int,
                 patch_size: int | None = None, fill: str = "mean", fill_value=None, mean=None, std=None,
                 family: str = "other"):
        super().__init__(img_size, patch_size, in_chans, num_classes)
        if fill not in FILLS:
            raise XaibenchError(f"unknown occlusion fill {fill!r}; valid: {', '.join(FILLS)}")
        if family not in FAMILIES:
            raise XaibenchError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
        self.fill = fill
        self.family = family
        self.net = module
        self.stem_chans = _stem_channels(module, in_chans)
        # The per-channel value used by fill="mean"; set from the training images (set_fill or the trainer).
        self.register_buffer("fill_value", torch.zeros(in_chans) if fill_value is None
                             else _channel_vector(fill_value, in_chans, "fill_value"))
        normalise = mean is not None or std is not None
        self.register_buffer("norm_mean", _channel_vector(0.0 if mean is None else mean, self.stem_chans, "mean")
                             if normalise else None, persistent=False)
        self.register_buffer("norm_std", _channel_vector(1.0 if std is None else std, self.stem_chans, "std")
                             if normalise else None, persistent=False)
        self._keep: torch.Tensor | None = None
        if fill == "token":
            self._attach_mask_token(module)

    def _attach_mask_token(self, module: nn.Module) -> None:
        embed = getattr(module, "patch_embed", None)
        if not isinstance(getattr(module, "mask_token", None), torch.Tensor) or embed is None:
            raise XaibenchError("fill 'token' needs a module with a `mask_token` and a `patch_embed` (a timm ViT "
                                "with a mask token); valid fills for this model: mean, zero, blur")
        n_tokens = getattr(embed, "num_patches", self.n_patches)
        if n_tokens != self.n_patches:
            raise XaibenchError(f"fill 'token': the module embeds {n_tokens} patches but the grid has "
                                f"{self.n_patches} (patch size {self.patch_size}); pass the module's patch size")
        embed.register_forward_hook(self._mask_tokens)

    def _mask_tokens(self, _module: nn.Module, _inputs, tokens: torch.Tensor) -> torch.Tensor:
        keep = self._keep
        if keep is None:
            return tokens
        if keep.shape != tokens.shape[:2]:
            raise ValueError(f"keep_mask must be [B, n]={tuple(tokens.shape[:2])}, got {tuple(keep.shape)}")
        return torch.where(keep[..., None], tokens, self.net.mask_token.to(tokens.dtype))

    def set_fill(self, fill_value) -> "WrappedClassifier":
        """Set the per-channel value of fill 'mean' (e.g. `dataset.channel_mean()` of the training split)."""
        self.fill_value.copy_(_channel_vector(fill_value, self.in_chans, "fill_value"))
        return self

    def occlude(self, x: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
        if self.fill == "blur":
            k = self.patch_size * 2 + 1
            baseline = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
        elif self.fill == "zero":
            baseline = torch.zeros_like(x[:1])
        else:
            baseline = self.fill_value.to(x.dtype).view(1, -1, 1, 1)
        return torch.where(self.keep_to_pixels(keep_mask), x, baseline)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the module expects it: channels repeated for an RGB stem, then normalised."""
        if x.shape[1] != self.stem_chans:
            x = x.expand(-1, self.stem_chans, -1, -1)
        if self.norm_mean is not None:
            pixels = x * PIXEL_STD + PIXEL_MEAN
            x = (pixels - self.norm_mean.to(x.dtype).view(1, -1, 1, 1)) / self.norm_std.to(x.dtype).view(1, -1, 1, 1)
        return x

    def forward(self, x: torch.Tensor, keep_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.fill != "token":
            if keep_mask is not None:
                x = self.occlude(x, keep_mask)
            return self.net(self.prepare(x))
        self._keep = keep_mask
        try:
            return self.net(self.prepare(x))
        finally:
            self._keep = None


def wrap_classifier(module: nn.Module, *, img_size: int, in_chans: int, num_classes: int,
                    patch_size: int | None = None, fill: str = "mean", fill_value=None, mean=None, std=None,
                    family: str = "other") -> WrappedClassifier:
    """Turn any image classifier into the masked-forward interface (see the module docstring)."""
    return WrappedClassifier(module, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                             patch_size=patch_size, fill=fill, fill_value=fill_value, mean=mean, std=std,
                             family=family)


def detect_family(module: nn.Module) -> str:
    """'cnn' for a convolutional net without attention, else 'other' (a wrapped ViT lacks the ViT methods' hooks)."""
    modules = list(module.modules())
    if any(isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower() for m in modules):
        return "other"
    return "cnn" if any(isinstance(m, nn.Conv2d) for m in modules) else "other"


def _close(name: str, valid: Sequence[str]) -> str:
    import difflib

    return ", ".join(difflib.get_close_matches(name, valid, n=5, cutoff=0.5)) or "(none)"


def _torchvision_module(name: str, num_classes: int, options: dict) -> nn.Module:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)
    if name not in valid:
        raise XaibenchError(f"unknown torchvision classifier {name!r}; valid: {', '.join(valid)}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)


def _timm_module(name: str, num_classes: int, in_chans: int, img_size: int, options: dict) -> nn.Module:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise XaibenchError(f"unknown timm model {name!r}; close names: {_close(name, timm.list_models())} "
                            f"(timm.list_models() lists all {len(timm.list_models())})")
    cfg = get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size:  # a ViT's position embedding is made for one image size
        options.setdefault("img_size", img_size)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **options)


def build_classifier(name: str, *, num_classes: int, in_chans: int, img_size: int, checkpoint: str | None = None,
                     **options) -> MaskedClassifier:
    """A classifier by name: 'torchvision:<name>' (no weights downloaded), 'timm:<name>' (pretrained=False) or a
    registered xaibench model; `checkpoint` (a state dict in .pt/.pth or .safetensors) is loaded into it.

    For the libraries' models, `options` holds the wrapper's own (patch_size, fill, fill_value, mean, std,
    family) and passes the rest to the constructor; the family defaults to what `detect_family` finds.
    """
    library, sep, bare = name.partition(":")
    if sep and library not in LIBRARIES:
        raise XaibenchError(f"unknown model library {library!r} in {name!r}; valid: "
                            f"{', '.join(f'{lib}:<name>' for lib in LIBRARIES)} or a registered model name")
    try:
        if sep:
            wrapper = {key: options.pop(key) for key in WRAPPER_OPTIONS if key in options}
            module = (_torchvision_module(bare, num_classes, options) if library == "torchvision"
                      else _timm_module(bare, num_classes, in_chans, img_size, options))
            wrapper.setdefault("family", detect_family(module))
            model = wrap_classifier(module, img_size=img_size, in_chans=in_chans, num_classes=num_classes, **wrapper)
        else:
            model = MODELS.create(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **options)
    except TypeError as error:
        raise XaibenchError(f"{name} does not take the options {sorted(options)}: {error}") from None
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model


def _mismatch(target: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, str]:
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if wrong:
        key = wrong[0]
        parts.append(f"{len(wrong)} of another shape (e.g. {key!r}: {list(state[key].shape)} in the file, "
                     f"{list(own[key].shape)} in the model)")
    return len(missing) + len(unexpected) + len(wrong), ", ".join(parts)


def load_checkpoint(model: MaskedClassifier, path: str | Path, name: str | None = None) -> MaskedClassifier:
    """Load a state dict file (.pt/.pth or .safetensors) into `model`: the state dict of the model itself or,
    for a wrapped classifier, of the bare module. A missing or unfitting file raises one XaibenchError line."""
    path = Path(path).expanduser()
    state = {k: v for k, v in read_state_dict(path, what="checkpoint").items() if torch.is_tensor(v)}
    targets = [model] + ([model.net] if isinstance(model, WrappedClassifier) else [])
    problems = []
    for target in targets:
        count, problem = _mismatch(target, state)
        if count == 0:
            target.load_state_dict(state)
            return model
        problems.append((count, problem))
    raise XaibenchError(f"checkpoint {path} does not fit {name or type(model).__name__}: {min(problems)[1]}")
