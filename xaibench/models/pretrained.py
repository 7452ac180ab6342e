"""Loading weights the user names: a local file, or timm's hub weights when they can be reached.

Never hangs on a closed network: the hub is probed with a short timeout first.
"""
from __future__ import annotations

import socket
from pathlib import Path

import torch
from torch import nn

from xaibench.errors import XaibenchError

HUB_HOST = "huggingface.co"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise XaibenchError(f"pretrained weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise XaibenchError(f"cannot read weights from {path}: {error}") from None
    for key in ("state_dict", "model", "encoder"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise XaibenchError(f"{path} holds no state dict")
    return state


def _hub_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    import timm

    try:
        probe = timm.create_model(model_name, pretrained=False)
    except Exception as error:
        raise XaibenchError(f"timm does not know the model {model_name!r}: {error}") from None
    hub_id = (getattr(probe, "pretrained_cfg", {}) or {}).get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                cached = try_to_load_from_cache(hub_id, filename)
                if isinstance(cached, str):
                    return _read_state_dict(Path(cached))
        except ImportError:
            pass
    try:
        socket.create_connection((HUB_HOST, 443), timeout=3.0).close()
    except OSError:
        raise XaibenchError(
            f"timm weights for {model_name!r} are not in the local Hugging Face cache and {HUB_HOST} cannot be "
            f"reached; on a machine with network, download model.safetensors of {hub_id or model_name} and pass "
            f"its path with --pretrained PATH"
        ) from None
    try:
        return timm.create_model(model_name, pretrained=True).state_dict()
    except Exception as error:
        raise XaibenchError(f"downloading timm weights for {model_name!r} failed: {error}") from None


def load_pretrained(module: nn.Module, spec: str | Path, num_prefix_tokens: int = 0) -> None:
    """Load `spec` (a file path, or 'timm:<model name>') into `module`, adapting what can be adapted.

    The classifier head is skipped when its shape differs; a ViT's position embedding
    and patch projection are resampled to the module's grid; RGB stem weights are
    summed for a grey input. Raises XaibenchError when most weights do not fit.
    """
    spec = str(spec)
    state = _hub_state_dict(spec[5:]) if spec.startswith("timm:") else _read_state_dict(Path(spec).expanduser())
    own = module.state_dict()
    adapted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
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
    module.load_state_dict(adapted, strict=False)


def _adapt(key: str, value: torch.Tensor, target: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor | None:
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    if key.endswith("pos_embed") and value.ndim == 3 and value.shape[-1] == target.shape[-1]:
        old = int(round((value.shape[1] - num_prefix_tokens) ** 0.5))
        new = int(round((target.shape[1] - num_prefix_tokens) ** 0.5))
        if old * old + num_prefix_tokens != value.shape[1]:  # checkpoint without prefix entries
            return None
        return resample_abs_pos_embed(value, new_size=(new, new), old_size=(old, old),
                                      num_prefix_tokens=num_prefix_tokens)
    if value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0]:
        if value.shape[1] != target.shape[1]:
            if target.shape[1] != 1:
                return None
            value = value.sum(dim=1, keepdim=True)
        if value.shape[2:] != target.shape[2:]:
            value = resample_patch_embed(value, list(target.shape[2:]))
        return value
    return None
