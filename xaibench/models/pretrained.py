"""Loading weights the user names, through timm's own loader: a local file, or `timm:<name>` weights.

Both go through timm (`build_model_with_cfg` / `load_pretrained`) with one checkpoint filter,
`adapt_state_dict`, that makes a checkpoint fit the model: the classifier head is skipped when its
shape differs, a ViT's position embedding (with or without class/register entries, as DINOv2's) and
patch projection are resampled to the model's grid (timm's `resample_abs_pos_embed`,
`resample_patch_embed`), and RGB stem weights are summed for a grey input.

`timm:<name>` weights are read from the local Hugging Face cache without any network request; where
they are not cached, the hub is probed with a short timeout first, so a closed network fails in
seconds with one clear line instead of hanging.
"""
from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from xaibench.errors import XaibenchError

HUB_HOST = "huggingface.co"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def read_state_dict(path: str | Path, what: str = "pretrained weights file") -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file read with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise XaibenchError(f"{what} {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise XaibenchError(f"cannot read {what} {path}: {str(error).splitlines()[0] if str(error) else error}") \
            from None
    state = unwrap_state_dict(state)
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise XaibenchError(f"{what} {path} holds no state dict")
    return state


def unwrap_state_dict(state: Any) -> Any:
    """The tensors of a checkpoint saved as {'state_dict' | 'model' | 'encoder': ...}, 'module.' prefixes removed."""
    for key in ("state_dict", "model", "encoder"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if isinstance(state, dict) and state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _hub_cached_file(cfg: dict) -> str | None:
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HUB_FILES
    for filename in names:
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return cached
    return None


def _probe(name: str, cfg: dict, timeout: float = 3.0) -> None:
    host = HUB_HOST if cfg.get("hf_hub_id") else (urlparse(cfg.get("url") or "").hostname or HUB_HOST)
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        raise XaibenchError(
            f"timm weights {name!r} are not in the local Hugging Face cache and {host} cannot be reached; on a "
            f"machine with network, download model.safetensors of {cfg.get('hf_hub_id') or name} and pass its path "
            f"with --set pretrained=PATH"
        ) from None


def pretrained_source(spec: str | Path, in_chans: int) -> dict:
    """timm's pretrained config for `spec` ('timm:<name>' or a file path), its source resolved offline first.

    `input_size` is the model's own channel count: `adapt_state_dict` has already fitted the stem,
    so timm's own channel adaptation has nothing left to do.
    """
    from timm.models import get_pretrained_cfg, list_pretrained

    spec = str(spec)
    if not spec.startswith("timm:"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise XaibenchError(f"pretrained weights file {path} does not exist")
        return dict(file=str(path), input_size=(in_chans, 224, 224), num_classes=None, classifier=None,
                    first_conv=None, custom_load=False)
    name = spec[len("timm:"):]
    found = get_pretrained_cfg(name)
    if found is None:
        import difflib

        close = difflib.get_close_matches(name, list_pretrained(), n=5, cutoff=0.5)
        raise XaibenchError(f"timm has no pretrained weights {name!r}; close names: {', '.join(close) or '(none)'} "
                            f"(timm.list_pretrained() lists them all)")
    cfg = dict(found.to_dict(), input_size=(in_chans, *found.input_size[1:]))
    cached = _hub_cached_file(cfg)
    if cached:  # read the cached file itself: no request to the hub at all
        cfg.update(file=cached, source=None, custom_load=False)
    else:
        _probe(name, cfg)
    return cfg


def adapt_state_dict(state: dict[str, torch.Tensor], model: nn.Module, spec: str = "the checkpoint",
                     num_prefix_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """timm checkpoint filter: the entries of `state` that fit `model`, adapted where they can be.

    Raises XaibenchError when fewer than half of the model's tensors are found.
    """
    state = unwrap_state_dict(state)
    own = model.state_dict()
    if num_prefix_tokens is None:
        num_prefix_tokens = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 0)
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own or not torch.is_tensor(value):
            continue
        target = own[key]
        if value.shape != target.shape:
            value = _adapt(key, value, target, num_prefix_tokens)
            if value is None:
                continue
        adapted[key] = value.to(target.dtype)
    if len(adapted) < 0.5 * len(own):
        raise XaibenchError(
            f"pretrained weights {spec} do not fit this model: only {len(adapted)} of {len(own)} tensors match"
        )
    return adapted


def _checkpoint_filter(spec: str, num_prefix_tokens: int | None = None):
    def checkpoint_filter(state_dict, model):
        return adapt_state_dict(state_dict, model, spec, num_prefix_tokens)

    return checkpoint_filter


def _timm_errors(spec: str, call):
    try:
        return call()
    except XaibenchError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise XaibenchError(f"loading pretrained weights {spec} failed: {first}") from None


def load_pretrained(module: nn.Module, spec: str | Path, num_prefix_tokens: int | None = None) -> None:
    """Load `spec` (a file path, or 'timm:<model name>') into `module` through timm's loader and our filter."""
    from timm.models import load_pretrained as timm_load_pretrained

    spec = str(spec)
    first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    cfg = pretrained_source(spec, first_conv.in_channels if first_conv is not None else 3)
    _timm_errors(spec, lambda: timm_load_pretrained(
        module, pretrained_cfg=cfg, num_classes=cfg.get("num_classes"), in_chans=cfg["input_size"][0],
        filter_fn=_checkpoint_filter(spec, num_prefix_tokens), strict=False))


def build_pretrained(model_cls, spec: str | Path, in_chans: int, **kwargs) -> nn.Module:
    """`model_cls(in_chans=in_chans, **kwargs)` built by timm's `build_model_with_cfg` with `spec`'s weights."""
    from timm.models import build_model_with_cfg

    spec = str(spec)
    cfg = pretrained_source(spec, in_chans)
    return _timm_errors(spec, lambda: build_model_with_cfg(
        model_cls, getattr(model_cls, "__name__", "model"), pretrained=True, pretrained_cfg=cfg,
        pretrained_strict=False, pretrained_filter_fn=_checkpoint_filter(spec), in_chans=in_chans, **kwargs))


def _resample_pos_embed(value: torch.Tensor, target: torch.Tensor, prefix: int) -> torch.Tensor | None:
    """A position embedding for the model's grid; the checkpoint may hold the model's prefix rows, a class
    row only, or none (DINOv2's `no_embed_class`): rows it lacks keep the model's own initial values."""
    from timm.layers import resample_abs_pos_embed

    new = math.isqrt(target.shape[1] - prefix)
    for old_prefix in dict.fromkeys((prefix, 1, 0)):
        old = math.isqrt(max(value.shape[1] - old_prefix, 0))
        if old > 0 and old * old + old_prefix == value.shape[1]:
            break
    else:
        return None
    grid = resample_abs_pos_embed(value[:, old_prefix:], new_size=(new, new), old_size=(old, old),
                                  num_prefix_tokens=0)
    head = target[:, :prefix].clone().to(grid.dtype)
    if old_prefix == prefix:
        head = value[:, :prefix]
    elif old_prefix >= 1 and prefix >= 1:  # the class token's position
        head[:, :1] = value[:, :1]
    return torch.cat([head, grid], dim=1)


def _adapt(key: str, value: torch.Tensor, target: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor | None:
    from timm.layers import resample_patch_embed

    if key.endswith("pos_embed") and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        if math.isqrt(target.shape[1] - num_prefix_tokens) ** 2 + num_prefix_tokens != target.shape[1]:
            return None
        return _resample_pos_embed(value, target, num_prefix_tokens)
    if value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0]:
        if value.shape[1] != target.shape[1]:
            if target.shape[1] != 1:
                return None
            value = value.sum(dim=1, keepdim=True)
        if value.shape[2:] != target.shape[2:]:
            value = resample_patch_embed(value, list(target.shape[2:]))
        return value
    return None
